# `make install` then `make test`; everything runs offline on a CPU.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test test-slow test-slurm lint bench toy-model clean

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# A CPU build of torch unless a GPU is present, so no CUDA wheels land on a CPU machine.
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; else $(PIP) install -q torch==2.13.0; fi
	$(PIP) install -q -e ".[dev]"

test:
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -m "not slow and not slurm"

test-slow:
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -m slow

# The slurm group on a one-node SLURM started here (as root; cluster/local_slurm.sh installs
# Debian's packages when missing): everything with accounting, then the sweep without it.
SLURM := cluster/local_slurm.sh
test-slurm:
	$(SLURM) stop
	$(SLURM) start
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -m slurm || { $(SLURM) stop; exit 1; }
	$(SLURM) stop
	$(SLURM) start --no-accounting
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -m slurm -k four_job_sweep || { $(SLURM) stop; exit 1; }
	$(SLURM) stop

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench:
	HF_HUB_OFFLINE=1 $(PY) -m experiments.bench

clean:
	rm -rf outputs multirun .pytest_cache

# Pretrain the toy world's model and oracle into tirun/assets/toy (the stages' wall-clock caps, 110
# minutes in all, bound it; 90 on 2 quiet cores), then measure what it draws from each ToyBench concept's
# names (its text ceiling, tirun/assets/toy/model/text_ceiling.json, which ToyBench reports read).
toy-model:
	rm -f tirun/assets/toy/pretrain_log.txt
	$(PY) -m tirun.toyworld.pretrain --stage all --out tirun/assets/toy
	$(PY) -m tirun.toybench.ceiling
