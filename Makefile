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

install: $(STAMP) $(CHECKOV) $(NOTEBOOK_STAMP)

run: $(STAMP)
	$(BIN)/stepml run $(ARGS)

# pytest exits 5 when it collects nothing: treat that as a failure, never a pass.
test: $(STAMP) $(CHECKOV) $(NOTEBOOK_STAMP) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP) $(NOTEBOOK_STAMP)
	$(BIN)/python -m pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .stepml .pytest_cache .mypy_cache .ruff_cache
