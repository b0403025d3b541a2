# make bench [SUITE=cifar_mtl]   create .venv if missing, run the suite, write reports/<suite>.md
# make test                      the test suite (CPU)
# make validate SUITE=...        check a suite without running it
# make report SUITE=...          rebuild the report from results/
# make perf-cli                  time the commands where nothing trains (validate, a small run); a benchmark
# make perf-report SUITE=...     time `bench report` (fresh interpreters; a benchmark, not a test)
# make perf-pool                 wall time of --executor local --workers $(WORKERS) vs inline on the CPU smoke suites
# make slurm-up / slurm-down      a one-node SLURM on this machine for the SLURM tests (root; installs it)
# PYTHON=python3 uses an existing interpreter instead of .venv (e.g. a GPU machine without internet).
SUITE ?= cifar_mtl
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
ARGS ?=
WORKERS ?= 2
POOL_SUITES ?= smoke smoke_freq3 smoke_shapes smoke_mnist smoke_cifar

ifeq ($(PYTHON),$(VENV)/bin/python)
SETUP := $(VENV)/.installed
else
SETUP :=
endif

.PHONY: bench test validate report perf perf-cli perf-report perf-pool clean-results slurm-up slurm-down slurm-status

bench: $(SETUP)
	$(PYTHON) -m bench run $(SUITE) $(ARGS)

validate: $(SETUP)
	$(PYTHON) -m bench validate $(SUITE) $(ARGS)

report: $(SETUP)
	$(PYTHON) -m bench report $(SUITE)

test: $(SETUP)
	$(PYTHON) -m pytest -q $(ARGS)

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

perf: $(SETUP)
	$(PYTHON) -m bench perf $(SUITE) $(ARGS)

perf-cli: $(SETUP)
	$(PYTHON) scripts/perf_cli.py $(ARGS)

perf-report: $(SETUP)
	$(PYTHON) scripts/perf_report.py $(SUITE) $(ARGS)

perf-pool: $(SETUP)
	$(PYTHON) -m bench.perf_executors $(POOL_SUITES) --workers $(WORKERS)

slurm-up:
	scripts/slurm.sh up

slurm-down:
	scripts/slurm.sh down

slurm-status:
	scripts/slurm.sh status
