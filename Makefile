# `make install` then `make test`; everything runs offline on a CPU.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# `make install EXTRAS=dev,xformers` adds xformers (CUDA only; train.attention=xformers).
EXTRAS ?= dev
TORCH ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install test test-slow test-slurm lint bench toy-model clean

# torch first, so tirun's `torch>=2.4` finds it. With a GPU (nvidia-smi), PyPI's torch, a CUDA
# build. Without one, the CPU build from PyTorch's CPU index: PyPI's Linux torch is the CUDA
# build, gigabytes of CUDA libraries a CPU never uses. Where that index cannot be reached (one
# try, a short timeout), the same version from the default index, with a line saying so; the
# last line before tirun's names the build that landed.
install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; \
	elif ! $(PIP) install -q --retries 0 --timeout 15 --index-url $(TORCH_CPU_INDEX) torch==$(TORCH); then \
	  echo "make install: $(TORCH_CPU_INDEX) not reached: torch==$(TORCH) from the default index (on Linux, its CUDA build)"; \
	  $(PIP) install -q torch==$(TORCH); fi
	@$(PY) -W ignore -c "import torch; print('make install: torch', torch.__version__, 'with CUDA ' + torch.version.cuda if torch.version.cuda else '(CPU build)')"
	$(PIP) install -q -e ".[$(EXTRAS)]"

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

# The report goes to outputs/bench/bench.md; `$(PY) -m experiments.bench --record` rewrites the
# committed experiments/results/bench.md.
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
