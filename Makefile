# Two commands on a fresh machine with Python 3.11+ and make:
#   make run   — set up .venv, migrate, create the demo user/workspace, build the offline demo
#                models, then run the web server and a Celery worker (Ctrl-C stops both)
#   make test  — set up .venv if needed and run the whole suite
PYTHON ?= python3
export HF_HUB_OFFLINE := 1
VENV := .venv
PY := $(VENV)/bin/python
# One install stamp per requirements set: `make run` needs the web and the worker (requirements/worker.txt,
# which includes web.txt), `make test` the suite's tools as well (requirements/dev.txt, which includes worker.txt).
RUN_STAMP := $(VENV)/.requirements-worker-installed
TEST_STAMP := $(VENV)/.requirements-dev-installed

.PHONY: run test bench

$(VENV)/.requirements-%-installed: requirements/%.txt requirements/web.txt requirements/worker.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r $< -c constraints.txt
	touch $@

# Development mode is explicit: settings default to DEBUG off, which needs a real DJANGO_SECRET_KEY.
run: export DJANGO_DEBUG := 1
run: $(RUN_STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap_demo
	$(PY) manage.py build_demo_models
	$(PY) manage.py run_dev

# Lint and format are checked before the suite runs (configuration in pyproject.toml).
test: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

bench: export DJANGO_DEBUG := 1
bench: $(RUN_STAMP)
	$(PY) -m bench
