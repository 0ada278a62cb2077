"""Generated datasets the project has never seen, one per way real data trips a tabular pipeline.

Each generator is deterministic (numpy ``default_rng`` with a fixed seed, no clock, no network) and small (60 to
~1,100 rows), so tests and ``benchmarks/model_quality.py`` can write them anywhere and get the same bytes.
``write_dataset(name, directory)`` writes ``<directory>/<name>.csv``; ``DATASETS`` says each one's target and
problem type (and, for ``two_targets``, the second target).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

ProblemType = Literal["binary_classification", "multiclass_classification", "regression"]
Rows = tuple[list[str], list[list[object]]]  # header, rows


@dataclass(frozen=True)
class SampleDataset:
    """A generated dataset: what it exercises, its target and problem type, and how to make it."""

    name: str
    target: str
    problem_type: ProblemType
    exercises: str
    generate: Callable[[], Rows] = field(repr=False)
    other_targets: tuple[tuple[str, ProblemType], ...] = ()

    @property
    def targets(self) -> tuple[tuple[str, ProblemType], ...]:
        """Every plausible (target, problem type) of the file, the default first."""
        return ((self.target, self.problem_type), *self.other_targets)


def _dates() -> Rows:
    """Daily rows over three years; demand follows the season and the weekend, not the noisy temperature."""
    rng = np.random.default_rng(1001)
    start = dt.date(2021, 1, 1)
    rows: list[list[object]] = []
    for offset in range(1096):
        day = start + dt.timedelta(days=offset)
        season = np.cos(2 * np.pi * (day.timetuple().tm_yday - 196) / 365.25)  # 1 in mid-July, -1 in January
        weekend = 1.0 if day.weekday() >= 5 else 0.0
        score = 1.2 * season + 1.5 * weekend + rng.normal(0, 0.45)
        demand = "high" if score > 1.0 else ("low" if score < -0.4 else "medium")
        temperature = 12 + 3 * season + rng.normal(0, 6)  # only weakly tied to the season: the date must carry it
        rows.append([day.isoformat(), round(float(temperature), 1), demand])
    return ["date", "temperature_c", "demand"], rows


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_POSITIVE = _words("great excellent love perfect wonderful happy recommend amazing sturdy comfortable fast reliable")
_NEGATIVE = _words("broken terrible awful refund disappointed poor slow cheap returned useless flimsy worst")
_NEUTRAL = _words(
    "the a it this product item i we was is and with for after days box color size order arrived "
    "package use bought kitchen work my our price delivery weeks battery screen fabric material"
)


def _text() -> Rows:
    """Reviews whose sentiment is carried by a few words among many neutral ones."""
    rng = np.random.default_rng(1002)
    rows: list[list[object]] = []
    for _ in range(1000):
        positive = bool(rng.random() < 0.5)
        words = list(rng.choice(_NEUTRAL, size=int(rng.integers(8, 20))))
        own, other = (_POSITIVE, _NEGATIVE) if positive else (_NEGATIVE, _POSITIVE)
        words += list(rng.choice(own, size=int(rng.integers(1, 4))))
        if rng.random() < 0.25:  # a contrary word now and then ("not great"), so it is not trivially separable
            words.append(str(rng.choice(other)))
        rng.shuffle(words)
        text = " ".join(str(w) for w in words).capitalize() + ("." if rng.random() < 0.7 else ", overall.")
        rows.append([text, "positive" if positive else "negative"])
    return ["review", "sentiment"], rows


def _ids() -> Rows:
    """Churn with a unique customer id and a unique account code beside real features."""
    rng = np.random.default_rng(1003)
    n = 800
    customer_ids = rng.permutation(np.arange(100000, 100000 + 5 * n))[:n]
    letters = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ"))
    codes: set[str] = set()
    rows: list[list[object]] = []
    for customer_id in customer_ids:
        code = ""
        while not code or code in codes:
            code = "".join(rng.choice(letters, size=3)) + "-" + str(int(rng.integers(1000, 10000)))
        codes.add(code)
        tenure = int(rng.integers(1, 73))
        monthly = round(float(rng.uniform(20, 120)), 2)
        plan = str(rng.choice(["basic", "standard", "premium"]))
        support_calls = int(rng.poisson(1.5))
        logit = -0.045 * tenure + 0.02 * (monthly - 70) + 0.55 * support_calls - (0.6 if plan == "premium" else 0) - 0.3
        churned = "yes" if rng.random() < 1 / (1 + np.exp(-logit)) else "no"
        rows.append([int(customer_id), code, tenure, monthly, plan, support_calls, churned])
    return ["customer_id", "account_code", "tenure_months", "monthly_charge", "plan", "support_calls", "churned"], rows


def _count() -> Rows:
    """A Poisson count target capped at 12: a regression, not 13 classes."""
    rng = np.random.default_rng(1004)
    rows: list[list[object]] = []
    for _ in range(1000):
        age = int(rng.integers(18, 80))
        distance = round(float(rng.exponential(8)), 1)
        region = str(rng.choice(["north", "south", "east", "west"]))
        rate = np.exp(0.4 + 0.025 * (age - 18) - 0.06 * distance + (0.5 if region == "south" else 0.0))
        visits = min(int(rng.poisson(rate)), 12)
        rows.append([age, distance, region, visits])
    return ["age", "distance_km", "region", "visits"], rows


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _thousands() -> Rows:
    """House prices written with thousands separators, as a feature (the list price) and as the target."""
    rng = np.random.default_rng(1005)
    rows: list[list[object]] = []
    for _ in range(600):
        area = int(rng.integers(450, 4200))
        rooms = int(np.clip(round(area / 550 + rng.normal(0, 0.8)), 1, 9))
        neighborhood = str(rng.choice(["harbor", "hills", "center", "suburb"]))
        factor = {"harbor": 1.35, "hills": 1.15, "center": 1.25, "suburb": 0.9}[neighborhood]
        value = (40000 + 210 * area + 9000 * rooms) * factor
        list_price = value * rng.normal(1.05, 0.08)
        sale_price = value * rng.normal(1.0, 0.05)
        rows.append([area, rooms, neighborhood, _money(list_price), _money(sale_price)])
    return ["area_sqft", "rooms", "neighborhood", "list_price", "sale_price"], rows


_PENGUINS = {  # species: (islands, bill length, bill depth, flipper, body mass) means; males are larger
    "Adelie": (("Biscoe", "Dream", "Torgersen"), 38.8, 18.3, 190.0, 3700.0),
    "Chinstrap": (("Dream",), 48.8, 18.4, 196.0, 3730.0),
    "Gentoo": (("Biscoe",), 47.5, 15.0, 217.0, 5080.0),
}


def _two_targets() -> Rows:
    """Penguin-like measurements with two plausible targets in one file: ``species`` and ``sex``."""
    rng = np.random.default_rng(1006)
    rows: list[list[object]] = []
    for species, count in (("Adelie", 152), ("Chinstrap", 68), ("Gentoo", 124)):
        islands, bill_length, bill_depth, flipper, mass = _PENGUINS[species]
        for _ in range(count):
            male = bool(rng.random() < 0.5)
            size = 1.0 if male else -1.0
            rows.append(
                [
                    str(rng.choice(islands)),
                    round(float(bill_length + 1.8 * size + rng.normal(0, 2.0)), 1),
                    round(float(bill_depth + 0.7 * size + rng.normal(0, 0.7)), 1),
                    round(float(flipper + 3.5 * size + rng.normal(0, 5.5))),
                    int(round(float(mass + 300 * size + rng.normal(0, 280)), -1)),
                    int(rng.choice([2007, 2008, 2009])),
                    "male" if male else "female",
                    species,
                ]
            )
    order = rng.permutation(len(rows))
    header = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year", "sex"]
    return [*header, "species"], [rows[i] for i in order]


def _none_category() -> Rows:
    """A literal ``None`` that is a real level: of a feature (no coupon) and of the target (no upgrade)."""
    rng = np.random.default_rng(1007)
    rows: list[list[object]] = []
    for _ in range(400):
        coupon = str(rng.choice(["None", "Basic", "Premium"], p=[0.45, 0.35, 0.2]))
        usage = round(float(rng.gamma(2.0, 5.0)), 1)
        score = {"None": -1.0, "Basic": 0.4, "Premium": 1.4}[coupon] + 0.06 * (usage - 10) + rng.normal(0, 0.6)
        upgrade = "None" if score < 0.0 else ("Monthly" if score < 1.2 else "Annual")
        rows.append([coupon, usage, int(rng.integers(1, 6)), upgrade])
    return ["coupon", "usage_hours", "seats", "upgrade"], rows


def _rare_class() -> Rows:
    """Three well-populated classes and one class (``delta``) with exactly 2 rows.

    The two ``delta`` rows sit where the pipeline's default split (seed 42, 20 % test, 20 % validation, not
    stratified since a 2-row class cannot be) puts one in test and one in train: the training split then has a
    class with one row, the failure the issue reports, rather than a lucky split that hides it.
    """
    rng = np.random.default_rng(1008)
    centers = {"alpha": (0.0, 0.0), "beta": (3.0, 0.5), "gamma": (1.0, 3.0), "delta": (4.0, 4.0)}
    labels = ["alpha"] * 100 + ["beta"] * 100 + ["gamma"] * 98 + ["delta"] * 2
    rows: list[list[object]] = []
    for label in labels:
        cx, cy = centers[label]
        rows.append([round(float(cx + rng.normal(0, 1)), 3), round(float(cy + rng.normal(0, 1)), 3), label])
    others = iter([rows[i] for i in rng.permutation(len(rows) - 2)])
    split_order = np.random.default_rng(42).permutation(len(rows))  # Preprocess's plain split: test first
    slots = {int(split_order[0]): rows[-2], int(split_order[-1]): rows[-1]}  # first test row, last train row
    return ["x1", "x2", "label"], [slots[i] if i in slots else next(others) for i in range(len(rows))]


def _small() -> Rows:
    """60 rows, a linear signal plus noise: enough to beat a constant, barely."""
    rng = np.random.default_rng(1009)
    rows: list[list[object]] = []
    for _ in range(60):
        x = rng.normal(0, 1, size=3)
        y = 2.0 * x[0] - 1.0 * x[1] + rng.normal(0, 1.5)
        rows.append([*(round(float(v), 3) for v in x), round(float(y), 3)])
    return ["x1", "x2", "x3", "y"], rows


DATASETS: dict[str, SampleDataset] = {
    d.name: d
    for d in (
        SampleDataset("dates", "demand", "multiclass_classification", "a date column carries the signal", _dates),
        SampleDataset("text", "sentiment", "binary_classification", "a free-text column carries the signal", _text),
        SampleDataset("ids", "churned", "binary_classification", "a unique id and a unique code", _ids),
        SampleDataset("count", "visits", "regression", "a count target 0-12", _count),
        SampleDataset("thousands", "sale_price", "regression", "numbers with thousands separators", _thousands),
        SampleDataset(
            "two_targets",
            "species",
            "multiclass_classification",
            "two targets in one file",
            _two_targets,
            other_targets=(("sex", "binary_classification"),),
        ),
        SampleDataset(
            "none_category", "upgrade", "multiclass_classification", 'a literal "None" level', _none_category
        ),
        SampleDataset("rare_class", "label", "multiclass_classification", "a class with 2 rows", _rare_class),
        SampleDataset("small", "y", "regression", "60 rows", _small),
    )
}


def generate(name: str) -> Rows:
    """The header and rows of the dataset ``name``."""
    if name not in DATASETS:
        raise KeyError(f"no sample dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name].generate()


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write rows as CSV (``\\n`` line ends, quoting only where needed), creating the parent directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_dataset(name: str, directory: Path | str) -> Path:
    """Write the dataset ``name`` to ``<directory>/<name>.csv`` and return that path."""
    header, rows = generate(name)
    return write_csv(Path(directory) / f"{name}.csv", header, rows)
