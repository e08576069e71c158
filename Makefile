# fibrecon: two commands set everything up on a fresh machine.
#   make demo   create .venv if needed, run the workflow on the embedded demo series
#   make test   the full test suite (unit + integration); make test-fast: unit tests only
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
# glibc's allocator returns large tensors to the system on every free, which
# costs torch-based steps (taufactor, U-Net) 1.5-3x here (shared/FACTS.md).
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736

.PHONY: demo test test-fast bench lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The demo's own settings (its sheet, the simulated series, the fiducial of its
# simulated cap) are merged over the generic config/config.yaml.
DEMO   := --configfile config/demo/config.yaml

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(DEMO)

# Two pytest-xdist workers, one test file each at a time (a file's tests share
# their fixtures: the SLURM cluster, the finished series); tests/conftest.py
# hands out the slowest files first. 17 min serial, 13-15 on 2 cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The edit-test loop: unit tests and docstring examples only (about 4 minutes);
# `make test` (what CI runs) adds the integration tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit src/fibrecon

# Heavy measurements (about 60 minutes); each script rewrites its own section
# of benchmarks/RESULTS.md. Peer tools (PyStack3D, scikit-learn, openpnm) come from
# benchmarks/requirements.txt. GPU training runs are kept as benchmarks/*_h100.json
# (python benchmarks/segmentation.py train --out DIR on a GPU machine).
bench: $(STAMP)
	$(BIN)/pip install --quiet -c requirements.txt -r benchmarks/requirements.txt
	$(BIN)/pip install --quiet --no-deps openpnm==3.6.4
	$(BIN)/snakemake --cores $(CORES) $(DEMO) --forceall
	$(BIN)/python benchmarks/collect.py
	$(BIN)/python benchmarks/sd_cost.py demo_mix10 demo_p33 demo_p40
	$(BIN)/python benchmarks/simulate_speed.py
	$(BIN)/python benchmarks/align_preprocess.py
	$(BIN)/python benchmarks/registration.py
	$(BIN)/python benchmarks/registration.py --spread
	$(BIN)/python benchmarks/voxel_size.py
	$(BIN)/python benchmarks/single_kv.py
	$(BIN)/python benchmarks/kv_mismatch.py
	$(BIN)/python benchmarks/contrast_microstructures.py
	$(BIN)/python benchmarks/streaming_memory.py 1000
	$(BIN)/python benchmarks/metrics.py
	$(BIN)/python benchmarks/packings.py --write
	$(BIN)/python benchmarks/cross_domain.py evaluate resources/models/unet_1kV_3kV.pt resources/models/unet_1kV_3kV_randomised.pt --sem --figure docs/cross_domain_sem.png --write
	$(BIN)/python benchmarks/cross_domain.py fallback --write
	$(BIN)/python benchmarks/workflow_transfer.py --write
	$(BIN)/python benchmarks/workflow_transfer.py --second-draw --write
	$(BIN)/python benchmarks/cross_domain.py signals --write
	$(BIN)/python benchmarks/segmentation.py speed
	$(BIN)/python benchmarks/segmentation.py evaluate
	$(BIN)/python benchmarks/segmentation.py gap
	$(BIN)/python benchmarks/metrics_scale.py --shapes 128 256 256 256 512 512
	$(BIN)/python benchmarks/real_segmentation.py
	$(BIN)/python benchmarks/label_efficiency.py --steps 200 --batch 8
	$(BIN)/python benchmarks/uncertainty.py
	$(BIN)/python benchmarks/tortuosity_speed.py --out .bench/tortuosity --sizes 128 256 --solvers fibrecon taufactor porespy
	$(BIN)/python benchmarks/tortuosity_speed.py --out .bench/tortuosity384 --sizes 384 --solvers fibrecon
	$(BIN)/python benchmarks/tortuosity_speed.py report .bench/tortuosity/tortuosity.json .bench/tortuosity384/tortuosity.json benchmarks/tortuosity_h100.json
	$(BIN)/python benchmarks/segmentation.py report benchmarks/segmentation_gpu.json

lint: $(STAMP)
	$(BIN)/snakemake $(DEMO) --lint
	$(BIN)/snakefmt --check .

clean:
	rm -rf results logs benchmarks/*/ .snakemake
