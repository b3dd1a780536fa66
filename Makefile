# One command each: `make demo`, `make test`, `make bench`, `make docs`.
# Each creates .venv when absent and installs the project into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.bench-installed
DOCS_INSTALLED := $(VENV)/.docs-installed

.PHONY: demo test bench bench-scale bench-real docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PIP) install --quiet -c constraints.txt -e ".[test,torch,vision,dask,saelens]"
	touch $@

$(BENCH_INSTALLED): $(INSTALLED)
	$(PIP) install --quiet -c constraints.txt -e ".[bench]"
	touch $@

$(DOCS_INSTALLED): $(INSTALLED)
	$(PIP) install --quiet -c constraints.txt -e ".[docs]"
	touch $@

demo: $(INSTALLED)
	$(PY) -m skdict demo

test: $(INSTALLED)
	$(PY) -m pytest

bench: $(BENCH_INSTALLED)
	$(PY) benchmarks/bench_pursuit.py
	$(PY) benchmarks/bench_ksvd.py
	$(PY) benchmarks/bench_sae.py

# Longer runs: 1M-row memory maps (2 GB and 3 GB in a temp dir), numba vs torch,
# and the paper-scale fit (1M x 768 into 16,384 atoms; about an hour on 2 cores).
bench-scale: $(BENCH_INSTALLED)
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_torch.py
	$(PY) benchmarks/bench_paper_scale.py --dask

# Real sentence embeddings (all-MiniLM-L6-v2, offline): DoubleBatchKSVD vs SAE vs
# scikit-learn at 1024 and 4096 atoms. Embeds 60,000 sentences once (cached under
# ~/.cache/skdict); writes benchmarks/results/real/ (benchmarks/results/real_60k/
# holds the run on the docs' comparison page). BENCH_REAL_ARGS=--quick is shorter.
bench-real: $(BENCH_INSTALLED)
	$(PY) benchmarks/bench_real.py $(BENCH_REAL_ARGS)

# Warnings are errors; the gallery scripts run during the build.
docs: $(DOCS_INSTALLED)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/auto_examples docs/generated docs/gen_modules
