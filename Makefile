# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: install demo test viz clean-data

$(VENV)/.installed: pyproject.toml requirements-lock.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/kedro run
	@echo "Report: $$(ls -d data/08_reporting/finetune_report.md/*/finetune_report.md | tail -n 1)"
	@echo "Plots:  $$(ls -d data/08_reporting/*.png/*/*.png | sort -t/ -k4 | tail -n 6 | tr '\n' ' ')"

test: install
	$(PY) -m pytest

viz: install
	$(VENV)/bin/kedro viz run

clean-data:
	find data -type f ! -name .gitkeep -delete
