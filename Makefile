# fibrecon: two commands set everything up on a fresh machine.
#   make demo   create .venv if needed, run the workflow on the embedded demo series
#   make test   the full test suite (unit + integration)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
# glibc's allocator returns large tensors to the system on every free, which
# costs torch-based steps (taufactor, U-Net) 1.5-3x here (shared/FACTS.md).
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736

.PHONY: demo test bench lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --forceall
	$(BIN)/python benchmarks/collect.py

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .

clean:
	rm -rf results logs benchmarks/*/ .snakemake
