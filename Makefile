# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit integration static bench clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# checkov pins boto3 and packaging versions that conflict with ours, so it lives in a venv of its own.
CHECKOV := $(VENV)/checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet "checkov==3.3.30"

# The notebook extra (stepfunctions 2.3.0 needs sagemaker<3, which caps attrs and packaging below what the
# core install gets) lives in a venv of its own, with the core and the dev tools; the core venv's pytest runs
# tests/integration/test_notebook.py in it and fails when it is missing.
NOTEBOOK_STAMP := $(VENV)/notebook/.installed
$(NOTEBOOK_STAMP): pyproject.toml
	test -x $(VENV)/notebook/bin/python || $(PYTHON) -m venv $(VENV)/notebook
	$(VENV)/notebook/bin/python -m pip install --quiet -e ".[notebook,dev]"
	touch $(NOTEBOOK_STAMP)

# On AWS, training/train.py and inference.py run in the SageMaker scikit-learn image the template deploys
# (1.2-1: Python 3.9, scikit-learn 1.2.1, pandas 1.1.3), not in .venv. A venv with those versions lets
# tests/integration/test_sagemaker_container.py train and serve there. Python 3.9 comes from PYTHON39, pyenv or
# the PATH; without one the build stops and says so.
PYTHON39 ?= $(shell ls -d $$HOME/.pyenv/versions/3.9*/bin/python 2>/dev/null | tail -1 || true)
PYTHON39 := $(or $(PYTHON39),$(shell command -v python3.9 2>/dev/null))
SM_SKLEARN_STAMP := $(VENV)/sagemaker-sklearn/.installed
$(SM_SKLEARN_STAMP): tests/data/sagemaker-sklearn-1.2-1.txt
	@test -n "$(PYTHON39)" || { echo "Python 3.9 is needed to check train.py against the SageMaker image; set PYTHON39=/path/to/python3.9" >&2; exit 1; }
	test -x $(VENV)/sagemaker-sklearn/bin/python || $(PYTHON39) -m venv $(VENV)/sagemaker-sklearn
	$(VENV)/sagemaker-sklearn/bin/python -m pip install --quiet -r tests/data/sagemaker-sklearn-1.2-1.txt
	touch $(SM_SKLEARN_STAMP)

# The AWS CLI (v1, the one on PyPI) checks the local AWS the way a user's scripts would; it pins botocore
# versions of its own, so it lives in a venv of its own too.
AWSCLI := $(VENV)/awscli/bin/aws
$(AWSCLI):
	$(PYTHON) -m venv $(VENV)/awscli
	$(VENV)/awscli/bin/python -m pip install --quiet "awscli==1.46.3"

install: $(STAMP) $(CHECKOV) $(NOTEBOOK_STAMP) $(SM_SKLEARN_STAMP) $(AWSCLI)

run: $(STAMP)
	$(BIN)/stepml run $(ARGS)

# pytest exits 5 when it collects nothing: treat that as a failure, never a pass.
# The five environments install side by side, and lint runs as soon as the core one is ready: pip spends most
# of its time on downloads and unpacking, so on a clean clone this takes about 4.5 minutes instead of 10.
# PYTEST_WORKERS=N runs the test files in N worker processes (pytest-xdist, one file's tests in one worker, so a
# module's fixtures are made once; session fixtures are made once per worker). Off by default: see the README.
PYTEST_WORKERS ?=
PYTEST_PARALLEL := $(if $(PYTEST_WORKERS),-n $(PYTEST_WORKERS) --dist loadfile)
# The slowest tests are listed at the end of every run: where CI's time goes (it must stay well under 45 min).
PYTEST_DURATIONS := --durations=40 --durations-min=10
test:
	$(MAKE) --no-print-directory -j6 install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_DURATIONS) $(PYTEST_PARALLEL) tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP) $(NOTEBOOK_STAMP) $(SM_SKLEARN_STAMP) $(AWSCLI)
	$(BIN)/python -m pytest -q tests/integration

# The bench extra (pinned packages that ship the public datasets) is installed once per pyproject.toml change.
# `make bench QUALITY=1` also exports them and runs the model-quality benchmark on them (tens of minutes).
bench: $(STAMP)
	test $(VENV)/.bench-installed -nt pyproject.toml || { $(BIN)/python -m pip install --quiet -e ".[dev,bench]" && touch $(VENV)/.bench-installed; }
	$(BIN)/python -m benchmarks.run_all
	if [ -n "$(QUALITY)" ]; then $(BIN)/python -m benchmarks.public_datasets --out .stepml/public-datasets && \
	  $(BIN)/python -m benchmarks.model_quality --data-dir .stepml/public-datasets --spec .stepml/public-datasets/spec.json; fi

clean:
	rm -rf $(VENV) .stepml .pytest_cache .mypy_cache .ruff_cache
