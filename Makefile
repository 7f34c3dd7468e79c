# parcelbox: `make demo` runs the story in the MicroPython VM, `make test` runs every test.
# Both create the virtual environment at .venv first (from pinned dependencies).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all vm-tests simtest fuzz bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: venv
	$(VENV)/bin/parcelbox demo

test: venv
	$(PY) -m pytest -q

# also the slow suites (long simulations)
test-all: venv
	$(PY) -m pytest -q -m ''

vm-tests: venv
	$(PY) -m pytest -q -m vm

# the deterministic simulation over many seeds (docs/detsim.md): make simtest SEEDS=1000
SEEDS ?= 200
simtest: venv
	$(PY) -m host_tools.sim.detsim --seeds $(SEEDS)

# the fuzzer (docs/fuzzing.md): every target for FUZZ_SECONDS each, its inputs per second;
# fails on a finding not already known: make fuzz FUZZ_SECONDS=600 FUZZ_SEED=7
FUZZ_SECONDS ?= 60
FUZZ_SEED ?= 0
fuzz: venv
	$(PY) -m host_tools.fuzz.runner --target all --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED)

# the benchmarks (docs/performance.md): one table, figures in bench/results.json
# make bench ARGS='--only flash --quick'
bench: venv
	$(PY) -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache
