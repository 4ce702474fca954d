# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit bench clean mixin

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# `make demo PORT=9999` serves the demo's metrics on another port (default 9890).
PORT ?=
demo: $(STAMP)
	$(VENV)/bin/healthimaging-exporter demo $(if $(PORT),--port $(PORT))

lint: $(STAMP)
	$(VENV)/bin/ruff check exporter tests bench
	$(VENV)/bin/ruff format --check exporter tests bench
	$(VENV)/bin/mypy

# Four test workers: most of the suite waits on real servers (Prometheus, Alertmanager, moto,
# the emulator), so four share two cores well.
test: $(STAMP)
	scripts/install-test-tools
	$(MAKE) lint
	$(VENV)/bin/pytest -n 4

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

# Regenerate deploy/prometheus/rules.yml, deploy/kubernetes/prometheusrule.yaml and
# deploy/grafana/dashboard.json from the jsonnet mixin in deploy/mixin.
mixin: $(STAMP)
	$(PY) deploy/mixin/generate.py

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
