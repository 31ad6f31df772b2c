# Everything a fresh machine needs lives here: `make demo` and `make test` are the whole set-up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-distributed test coverage bench system-deps venv clean fixtures

# ffmpeg/ffprobe, libmagic and the PostgreSQL server (the tests start a throwaway cluster), and espeak-ng
# (speech for the quality bench and the VBR fit test): apt-get on Debian/Ubuntu, brew on macOS, otherwise
# say what is missing.
system-deps:
	@missing=""; pg=""; espeak=""; \
	{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb /opt/homebrew/opt/postgresql@*/bin/initdb; } 2>/dev/null | grep -q . || { missing="$$missing postgresql"; pg=postgresql; }; \
	command -v ffmpeg  >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v ffprobe >/dev/null 2>&1 || missing="$$missing ffprobe"; \
	command -v espeak-ng >/dev/null 2>&1 || { missing="$$missing espeak-ng"; espeak=espeak-ng; }; \
	{ ldconfig -p 2>/dev/null | grep -q 'libmagic\.so\.1' || [ -e /opt/homebrew/lib/libmagic.dylib ] || [ -e /usr/local/lib/libmagic.dylib ]; } || missing="$$missing libmagic"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "installing:$$missing"; \
	if command -v apt-get >/dev/null 2>&1; then \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg libmagic1 $$pg $$espeak >/dev/null; \
	elif command -v brew >/dev/null 2>&1; then \
		brew install ffmpeg libmagic $${pg:+postgresql@16} $$espeak; \
	else \
		echo "audiopipe needs:$$missing. Install ffmpeg (with ffprobe), libmagic, postgresql and espeak-ng with your package manager," >&2; \
		echo "or point AUDIOPIPE_FFMPEG / AUDIOPIPE_FFPROBE at the binaries." >&2; exit 1; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

# The gates, in order, stopping at the first that fails: style (ruff), types (mypy --strict on the package, as
# pyproject.toml configures it), then the tests. Three test workers (xdist) on this 2-core machine and CI's: much
# of a test's time is spent waiting on the sandbox's latency, PostgreSQL, a worker process or a signal, and with
# two workers the cores stood idle a third of the run; worksteal evens out the few long tests (tests/conftest.py
# deals the slow ones out first). The suite keeps both cores busy, so coverage's tracing (about 15 % more CPU,
# measured) would take it past ten minutes on them: `make coverage` runs the same tests with the package's
# coverage (the CLI in tests' subprocesses too) printed at the end. PYTEST_ARGS adds to pytest's command line:
# make test PYTEST_ARGS="-m 'not slow'".
TEST_WORKERS ?= 3
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal
test: system-deps venv
	$(VENV)/bin/ruff check audiopipe tests bench fixtures
	$(VENV)/bin/mypy
	$(PYTEST) $(PYTEST_ARGS)

coverage: system-deps venv
	$(PYTEST) --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

demo: system-deps venv
	$(PY) -m audiopipe.cli.demo

# The same recordings as a distributed campaign: a throwaway PostgreSQL cluster, the sandbox, the planner
# (--plan-only), two workers until idle, and status; everything but the cluster under ./demo-distributed.
demo-distributed: system-deps venv
	$(PY) -m audiopipe.cli.demo_distributed

fixtures: system-deps venv
	$(PY) fixtures/make_fixtures.py

bench: system-deps venv
	$(PY) bench/run.py
	$(PY) bench/bench_upload.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_quality.py

clean:
	rm -rf $(VENV) demo demo-distributed bench/out .coverage .coverage.* .mypy_cache .ruff_cache
