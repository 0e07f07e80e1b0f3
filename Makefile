# Two entry points (README): `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXAMPLE := examples/scene0000_00/scene0000_00_vh_clean_2.ply

.PHONY: demo test bench lint example clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Segment the bundled example scene. Uses $$DKNET_CHECKPOINT when set, else seeded random weights.
demo: $(VENV)/.installed
	$(PY) -m engine.run $(EXAMPLE) --out demo_out --dump demo_out/scene0000_00.npz \
		$(if $(DKNET_CHECKPOINT),--checkpoint $(DKNET_CHECKPOINT),--random-weights)

test: $(VENV)/.installed
	$(PY) -m ruff check .
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2 --dist loadfile

# Benchmark results as data: docs/bench/<date>-<machine>.json (pytest-benchmark's JSON, machine info included).
BENCH_JSON ?= docs/bench/$(shell date +%F)-$(shell uname -m)-$(shell nproc)cpu.json
bench: $(VENV)/.installed
	mkdir -p docs/bench
	$(PY) -m pytest --benchmark-only -q --benchmark-json $(BENCH_JSON)

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# Regenerate the bundled example (deterministic).
example: $(VENV)/.installed
	$(PY) -m engine.synthetic --out examples/scene0000_00 --points 20000 --seed 0 --name scene0000_00

clean:
	rm -rf $(VENV) demo_out dknet_out .pytest_cache .benchmarks
