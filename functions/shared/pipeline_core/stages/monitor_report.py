"""The drift report as one self-contained HTML page: summary, schema findings, a table of every feature and,
per compared feature, the baseline's and the new data's shares per bin (or category) side by side.

The plots are inline SVG drawn here, not matplotlib PNGs as in the evaluation report
(:mod:`pipeline_core.stages.report`): the Monitor function needs pyarrow to read Parquet, so it takes the AWS SDK
for pandas layer, and matplotlib does not fit beside that layer in Lambda's 250 MiB (docs/deploy.md). Bar
charts need nothing more than rectangles and text; SVG keeps them sharp and the page small.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline_core.stages.drift import BinShare, FeatureDrift

if TYPE_CHECKING:  # (monitor imports this module to render its result)
    from pipeline_core.stages.monitor import MonitorResult

_WIDTH, _HEIGHT = 440, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 10, 14, 56
_BASELINE_COLOUR, _CURRENT_COLOUR, _DRIFT_COLOUR = "#9aa5b1", "#2b6cb0", "#c53030"
_MAX_LABEL = 14
NONE = "\u2013"  # an en dash where there is no value
_VERDICT_COLOURS = {
    "drift": "#c53030",
    "schema": "#c53030",
    "missing_rate": "#c53030",
    "ok": "#2f855a",
    "no_drift": "#2f855a",
    "insufficient_data": "#b7791f",
    "not_compared": "#718096",
}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#1a202c;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #cbd5e0;padding:.3em .6em;text-align:left;
vertical-align:top;font-size:.9em}th{background:#edf2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600}.plots{display:flex;flex-wrap:wrap;gap:1em}.plot{border:1px solid #e2e8f0;padding:.4em}
.plot h3{font-size:.95em;margin:.2em 0}.note{color:#4a5568;font-size:.9em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _verdict(value: str) -> str:
    colour = _VERDICT_COLOURS.get(value, "#1a202c")
    return f'<span class="verdict" style="color:{colour}">{_e(value.replace("_", " "))}</span>'


def _num(value: float | None, digits: int = 3) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return NONE if value is None else f"{value:.2g}"


def _share(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def _label(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def bars_svg(bins: Sequence[BinShare], drifted: bool) -> str:
    """Grouped bars: each bin's share in the baseline and in the new data; y axis in percent."""
    plot_width, plot_height = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    top = max([0.01, *(b.baseline for b in bins), *(b.current for b in bins)]) * 1.1
    group = plot_width / max(len(bins), 1)
    bar = group * 0.38
    current_colour = _DRIFT_COLOUR if drifted else _CURRENT_COLOUR
    rotate = len(bins) > 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" font-size="10">'
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_height * (1 - fraction)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>'
            f'<text x="{_LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{top * fraction:.0%}</text>'
        )
    for index, share in enumerate(bins):
        x = _LEFT + index * group + group * 0.1
        for offset, value, colour, side in ((0, share.baseline, _BASELINE_COLOUR, "baseline"),
                                            (bar, share.current, current_colour, "new data")):  # fmt: skip
            height = plot_height * value / top
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{_TOP + plot_height - height:.1f}" width="{bar:.1f}" '
                f'height="{height:.1f}" fill="{colour}"><title>{_e(share.label)}: {side} {value:.1%}</title></rect>'
            )
        label_x, label_y = _LEFT + index * group + group / 2, _TOP + plot_height + 12
        transform = f' transform="rotate(-35 {label_x:.1f} {label_y:.1f})"' if rotate else ""
        anchor = "end" if rotate else "middle"
        label = _e(_label(share.label))
        parts.append(f'<text x="{label_x:.1f}" y="{label_y:.1f}" text-anchor="{anchor}"{transform}>{label}</text>')
    legend_y = _HEIGHT - 6
    parts.append(
        f'<rect x="{_LEFT}" y="{legend_y - 8}" width="9" height="9" fill="{_BASELINE_COLOUR}"/>'
        f'<text x="{_LEFT + 13}" y="{legend_y}">training baseline</text>'
        f'<rect x="{_LEFT + 120}" y="{legend_y - 8}" width="9" height="9" fill="{current_colour}"/>'
        f'<text x="{_LEFT + 133}" y="{legend_y}">new data</text></svg>'
    )
    return "".join(parts)


def _source(result: MonitorResult) -> str:
    source = result.source
    if source.kind == "file":
        return f"file {_e(source.uri)}"
    text = f"prediction log, {_e(source.since)} to {_e(source.until)}: {source.requests} requests"
    if source.model_versions:
        text += " (rows per version: " + ", ".join(f"v{_e(v)} {n}" for v, n in source.model_versions.items()) + ")"
    if source.capped:
        text += "; more rows were logged than were read (the newest were)"
    if source.truncated_requests:
        text += f"; {source.truncated_requests} requests kept only their first rows"
    return text


def _feature_row(feature: FeatureDrift) -> str:
    test = {"ks": "KS", "chi_square": "χ²"}.get(feature.test or "", "")
    statistic = f"D={feature.statistic:.3f}" if feature.statistic is not None else ""
    return (
        f"<tr><td>{_e(feature.name)}</td><td>{_e(feature.role)}</td><td>{_verdict(feature.verdict)}</td>"
        f'<td class="num">{_num(feature.psi)}</td><td>{test} {_p(feature.p_value)} {statistic}</td>'
        f'<td class="num">{_share(feature.baseline_missing_rate)} → {_share(feature.missing_rate)}</td>'
        f'<td class="num">{feature.type_errors}</td><td class="num">{feature.present}</td>'
        f"<td>{'<br>'.join(_e(r) for r in feature.reasons)}</td></tr>"
    )


def render_report(result: MonitorResult) -> str:
    """The report page for ``result`` (every string escaped)."""
    thresholds = result.thresholds
    summary = [
        ("Model", f"{_e(result.model_name)} v{result.version}"),
        ("Verdict", f"{_verdict(result.verdict)}: {_e(result.message)}"),
        ("Data", _source(result)),
        ("Rows", str(result.rows)),
        ("Largest PSI", _num(result.drift_score_max)),
        ("Baseline", _e(result.baseline_uri)),
        (
            "Thresholds",
            f"PSI ≥ {thresholds.psi} and p &lt; {thresholds.p_value}; missing share "
            f"+{thresholds.missing_rate_increase:.0%}; wrong types &gt; {thresholds.type_error_rate:.0%}; at least "
            f"{thresholds.min_rows} rows",
        ),
        ("Created", _e(result.created_at)),
    ]
    schema = []
    if result.missing_columns:
        schema.append(f"<p>Missing feature columns: {_e(', '.join(result.missing_columns))}</p>")
    if result.unseen_columns:
        schema.append(f"<p>Columns the model was not trained with: {_e(', '.join(result.unseen_columns))}</p>")
    plotted = sorted((f for f in result.features if f.bins), key=lambda f: (not f.drifted, -(f.psi or 0), f.name))
    plots = [
        f'<div class="plot"><h3>{_e(f.name)} · {_verdict(f.verdict)} · PSI {_num(f.psi)}</h3>'
        f"{bars_svg(f.bins, f.drifted)}</div>"
        for f in plotted
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Drift report: {_e(result.model_name)} v{result.version}</title><style>{_STYLE}</style></head>",
            f"<body><h1>Drift report: {_e(result.model_name)} v{result.version}</h1>",
            "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in summary) + "</table>",
            "<h2>Schema</h2>" + ("".join(schema) or "<p>Every feature column is there, and no column is new.</p>"),
            "<h2>Features</h2><table><tr><th>feature</th><th>role</th><th>verdict</th><th>PSI</th><th>test p</th>"
            "<th>missing (baseline → new)</th><th>wrong types</th><th>values</th><th>why</th></tr>"
            + "".join(_feature_row(f) for f in result.features)
            + "</table>",
            '<p class="note">PSI: population stability index over the training deciles (numeric) or categories, '
            "smoothed; p: two-sample Kolmogorov-Smirnov (numeric) or chi-square (categorical) test. A feature drifts "
            "when both cross their thresholds.</p>",
            "<h2>Distributions</h2>",
            '<div class="plots">' + ("".join(plots) or "<p>No distribution was compared.</p>") + "</div>",
            "</body></html>",
        ]
    )
