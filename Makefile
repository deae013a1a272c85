# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2
DEMO_DIR := demo/cohort

.PHONY: install demo test test-slurm bench lint format constraints clean browser

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

$(DEMO_DIR)/samples.tsv: | $(STAMP)
	$(BIN)/cytopipe synth-cohort --demo --out $(DEMO_DIR)

demo: $(STAMP) $(DEMO_DIR)/samples.tsv
	$(BIN)/snakemake --cores $(CORES) --keep-going --quiet rules
	@echo
	$(BIN)/snakemake --report results/snakemake_report.html --quiet
	@echo "Report: $(CURDIR)/results/report/index.html"
	@echo "Snakemake's own report: $(CURDIR)/results/snakemake_report.html"

# One pytest worker per core (pytest-xdist): the suite is mostly single-threaded NumPy.
# --dist loadfile keeps a module on one worker, so a costly module-scoped set-up (the workflow
# run, the CAR-T cohort) runs once: split over two workers, CI paid for them twice.
# (xdist_group marks do not group under pytest 9: xdist 3.8 renames a test's old node id.)
test: $(STAMP) browser
	$(BIN)/python -m pytest -n $(CORES) --dist loadfile

# The report's browser test needs Debian's chromium; install it where we may (root + apt),
# otherwise that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium not installed: the browser test will be skipped"

# A real single-node SLURM (apt installs slurm-wlm + munge when root); skips with the reason elsewhere.
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -m slurm tests/test_slurm.py

bench: $(STAMP)
	$(BIN)/python -m pytest -m slow
	$(BIN)/python benchmarks/bench_gating.py
	$(BIN)/python benchmarks/bench_dag.py
	$(BIN)/python benchmarks/random_accuracy.py --n 70 --tsv results/random_accuracy.tsv
	$(BIN)/python benchmarks/bench_autogate.py
	$(BIN)/python benchmarks/real_gating.py
	$(BIN)/python benchmarks/real_fuzz.py --tsv results/real_fuzz.tsv
	$(BIN)/python benchmarks/bench_learn.py

lint: $(STAMP)
	$(BIN)/ruff check cytopipe tests benchmarks
	$(BIN)/ruff format --check cytopipe tests benchmarks
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format cytopipe tests benchmarks
	$(BIN)/ruff check --fix cytopipe tests benchmarks

# Regenerate pinned versions after bumping ranges in pyproject.toml.
constraints:
	rm -rf /tmp/cytopipe-pin && $(PYTHON) -m venv /tmp/cytopipe-pin
	/tmp/cytopipe-pin/bin/pip install --quiet '.[dev]'
	{ echo "# Pinned versions for a reproducible install (pip install -c constraints.txt)."; \
	  echo "# Bump: edit pyproject ranges, then 'make constraints' regenerates this file."; \
	  /tmp/cytopipe-pin/bin/pip freeze --exclude cytopipe; } > constraints.txt

clean:
	rm -rf results .snakemake
