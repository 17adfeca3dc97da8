.PHONY: help install test test-full lint format mrl baseline

help:  ## list targets
	@grep -E '^[a-z]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

install:  ## CPU torch pin, then the package with dev tools
	pip install torch==2.13.0 && pip install -e ".[dev]"

test:  ## the fast inner loop: every test not marked slow
	OMP_NUM_THREADS=1 pytest -q -n 2 -m "not slow"

test-full:  ## the whole suite, as CI runs it (README's test command)
	ruff check . && OMP_NUM_THREADS=1 pytest -q -n 2

lint:  ## ruff lint + format check
	ruff check . && ruff format --check .

format:  ## ruff format + autofix
	ruff format . && ruff check --fix .

mrl:  ## the MiniLM MRL run on CPU from the local mirrors (~15 min on 2 cores)
	MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models python train.py +exp=allnli_mrl model=minilm_l6 trainer=cpu

baseline:  ## its regular baseline, overlaid on the MRL curve
	MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models python train.py +exp=allnli_baseline model=minilm_l6 trainer=cpu "eval.compare_to='outputs/runs/allnli_mrl/seed42/model=minilm_l6'"
