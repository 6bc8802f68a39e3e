# sempair — the two commands that matter: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export DVC_NO_ANALYTICS := 1
# DVC's site cache inside the project, not /var/tmp/dvc
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site-cache
export PYTHONUNBUFFERED := 1

.PHONY: venv demo demo-s3 test lint format compile bench lock clean repro push pull

# torch first, alone and exact (any other spec pulls a multi-GB CUDA build), then
# everything else in one resolve against the lock.
$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements/lock.txt -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

venv: $(STAMP)

demo: venv  ## synthetic recordings -> the Kubeflow pipeline, run locally
	$(PY) -m pipelines.local --synth --recordings 16 --workdir runs/demo

demo-s3: venv  ## the same, reading and publishing through a local S3-protocol server
	$(PY) -m pipelines.local --synth --recordings 16 --s3 --workdir runs/demo-s3

repro: venv  ## the DVC pipeline (dvc.yaml) on params.yaml
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro

push: venv  ## DVC outputs -> the S3 remote (endpoint: .dvc/config.local or AWS_ENDPOINT_URL)
	$(VENV)/bin/dvc push

pull: venv  ## the S3 remote -> this checkout's data, models and reports
	$(VENV)/bin/dvc pull

test: venv  ## the whole test suite
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff check --fix .

compile: venv  ## refresh pipelines/training_pipeline.yaml
	$(PY) -m pipelines.compile

bench: venv  ## benchmarks -> benchmarks/results.md (about 15 minutes on 2 cores)
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/mining.py
	$(PY) benchmarks/training.py
	$(PY) benchmarks/storage.py
	$(PY) benchmarks/serving.py

lock: venv  ## pin today's resolve into requirements/lock.txt
	(head -2 requirements/lock.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^torch==') \
		> requirements/lock.tmp && mv requirements/lock.tmp requirements/lock.txt

clean:
	rm -rf runs .pytest_cache .ruff_cache benchmarks/.work
