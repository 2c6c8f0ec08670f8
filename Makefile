# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: install demo test viz mlflow clean-data

$(VENV)/.installed: pyproject.toml requirements-lock.txt requirements-nodeps.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/kedro run

# The test files spread over the cores (pytest-xdist), a file's tests in one worker so that its module
# fixtures (a full `kedro run`) are built once, the files with slow tests first (tests/conftest.py, which
# also shares the cores' threads among workers).
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile --no-loadscope-reorder

# `make viz ENV=tiny`: the pipelines as `kedro run --env tiny` builds them. --include-hooks runs the
# hook that hands the environment's parameters to the pipeline registry (one namespace per variant);
# without it kedro-viz draws the variants of conf/base.
ENV ?= base
viz: install
	$(VENV)/bin/kedro viz run --env $(ENV) --include-hooks

# The MLflow runs of `TLKEDRO_TRACKING=1 kedro run` (docs/tracking.md) in MLflow's UI on 127.0.0.1:5000.
# The project's venv has mlflow-skinny (client and store, no UI); the UI is the full mlflow wheel, whose pins
# (pyarrow<26, graphene) clash with the lock, so it gets a venv of its own. It only reads the store.
MLFLOW_UI := $(VENV)/mlflow-ui
MLFLOW_PORT ?= 5000
$(MLFLOW_UI)/.installed:
	python3 -m venv $(MLFLOW_UI)
	$(MLFLOW_UI)/bin/python -m pip install --quiet --disable-pip-version-check mlflow==3.17.2
	touch $@

mlflow: $(MLFLOW_UI)/.installed
	$(MLFLOW_UI)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

# Files and the folders they leave empty: the synthetic cohort refuses to write into a non-empty folder
# that lacks its marker file, and a tree of empty subject folders is not empty.
clean-data:
	find data -type f ! -name .gitkeep -delete
	find data -mindepth 2 -type d -empty -delete
