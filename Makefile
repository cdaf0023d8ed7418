# Two commands: `make run` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.toml

.PHONY: run test bench soak lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs pinned versions (constraints.txt) so a fresh machine gets what the tests passed with;
# the install also compiles logwatchd/_scan.c (setup.py), again whenever it changes.
# Bytecode is compiled here, as a wheel install does: each process would otherwise compile
# the package again at start-up where PYTHONDONTWRITEBYTECODE is set (~0.05 s each).
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt setup.py logwatchd/_scan.c
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	$(BIN)/python -m compileall -q logwatchd
	touch $@

run: $(VENV)/.installed
	$(BIN)/logwatchd run -c $(CONFIG)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# wrk (Debian) measures HTTP latency without competing for the GIL; without it the
# benchmark falls back to a Python client and says so.
bench: $(VENV)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)) \
		|| echo "wrk not installed: HTTP figures come from the Python client"; }
	$(BIN)/python -m bench

# Ten minutes of the real daemon under a mixed and hostile stream and HTTP load: prints the
# growth of RSS, fds, threads, ledger and WAL and the exactly-once check; fails past a bound.
soak: $(VENV)/.installed
	$(BIN)/python -m bench.soak --minutes 10

lint: $(VENV)/.installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[lint]'
	$(BIN)/ruff check logwatchd tests bench
	$(BIN)/mypy logwatchd

clean:
	rm -rf $(VENV) var .pytest_cache
