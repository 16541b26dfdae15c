# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# pytest-xdist workers for `make test`, each test file on one of them (0: in this process).
PYTEST_WORKERS ?= 2

.PHONY: run test install lint format clean bench assets chromium nginx promtool

# Re-install only when the dependency list changes.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "collab needs Python 3.11 or newer (set PYTHON=python3.x)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# django-stubs reads the settings' types from collab/settings.py, but mypy's cache does not record
# that code using `settings` depends on that file: after it changes, mypy starts from a clean cache.
MYPY_CACHE_STAMP := .mypy_cache/settings.stamp
$(MYPY_CACHE_STAMP): collab/settings.py
	rm -rf .mypy_cache
	mkdir -p .mypy_cache
	@touch $@

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

# The browser tests drive the system Chromium; on Debian as root it is installed when missing.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq chromium; } \
	  || { echo "tests/browser needs Chromium at /usr/bin/chromium (Debian: apt-get install chromium)"; exit 1; }

# tests/deploy put Debian's nginx in front of live servers; installed the same way when missing.
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq nginx-light; } \
	  || { echo "tests/deploy need nginx (Debian: apt-get install nginx-light)"; exit 1; }

# tests/deploy/test_monitoring.py checks the Prometheus files with promtool (Debian's prometheus
# package, without the node exporter it recommends); installed the same way when missing.
promtool:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } \
	  || { echo "tests/deploy need promtool (Debian: apt-get install --no-install-recommends prometheus)"; exit 1; }

test: install chromium nginx promtool $(MYPY_CACHE_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# collab and the reference y-websocket server under the same loads, side by side
# (docs/BENCHMARKS.md), three rounds each. Loopback only, bounded;
# e.g. make bench BENCH_ARGS="--readers 50 --rounds 1".
bench: install
	$(PY) -m bench.run $(BENCH_ARGS)

lint: install $(MYPY_CACHE_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Rebuilds the committed editor bundle (static/editor/) from frontend/src; needs Node 18+.
# `make run` does not: the bundle is committed (docs/frontend.md).
assets:
	cd frontend && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .mypy_cache
