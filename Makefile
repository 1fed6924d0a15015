# Two commands on a fresh machine with Python 3.11+ and make:
#   make run   — set up .venv, migrate, create the demo user/workspace, build the offline demo
#                models, then run the web server and a Celery worker (Ctrl-C stops both)
#   make test  — set up .venv if needed and run the whole suite
PYTHON ?= python3
export HF_HUB_OFFLINE := 1
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test bench

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -c constraints.txt
	touch $(STAMP)

# Development mode is explicit: settings default to DEBUG off, which needs a real DJANGO_SECRET_KEY.
run: export DJANGO_DEBUG := 1
run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap_demo
	$(PY) manage.py build_demo_models
	$(PY) manage.py run_dev

test: $(STAMP)
	$(PY) -m pytest

bench: export DJANGO_DEBUG := 1
bench: $(STAMP)
	$(PY) -m bench
