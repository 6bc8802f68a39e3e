# sempair — the two commands that matter: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export DVC_NO_ANALYTICS := 1
# DVC's site cache inside the project, not /var/tmp/dvc
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site-cache
export PYTHONUNBUFFERED := 1

# container images (Dockerfile, Dockerfile.cuda): tagged with pyproject's version, which
# params.yaml's pipeline.base_image and pipeline.train_image name
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY   ?= ghcr.io/sempair
GIT_REV     = $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE      := $(REGISTRY)/sempair:$(VERSION)
CUDA_IMAGE := $(REGISTRY)/sempair-cuda:$(VERSION)

.PHONY: venv demo demo-s3 test lint format compile bench lock clean repro push pull
.PHONY: images push-images lint-images docker-engine

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

# train.threads pinned: float sums split over another number of threads round differently,
# and a few hundred steps carry that into the result; 2 keeps the demo the same on any
# machine with at least 2 cores
demo: venv  ## synthetic recordings -> the Kubeflow pipeline, run locally
	$(VENV)/bin/sempair pipeline run --local --synth --recordings 16 --workdir runs/demo \
		--set train.threads=2

demo-s3: venv  ## the same, reading and publishing through a local S3-protocol server
	$(VENV)/bin/sempair pipeline run --local --synth --recordings 16 --s3 --workdir runs/demo-s3 \
		--set train.threads=2

repro: venv  ## the DVC pipeline (dvc.yaml) on params.yaml
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro

push: venv  ## DVC outputs -> the S3 remote (endpoint: .dvc/config.local or AWS_ENDPOINT_URL)
	$(VENV)/bin/dvc push

pull: venv  ## the S3 remote -> this checkout's data, models and reports
	$(VENV)/bin/dvc pull

test: venv  ## the whole test suite
	$(PY) -m pytest

lint: venv lint-images
	$(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff check --fix .

lint-images: venv  ## hadolint on both Dockerfiles (needs no Docker engine)
	$(VENV)/bin/hadolint Dockerfile Dockerfile.cuda

images: lint-images docker-engine  ## build the CPU and CUDA images (needs a Docker engine)
	docker build -f Dockerfile -t $(IMAGE) \
		--build-arg SEMPAIR_VERSION=$(VERSION) --build-arg SEMPAIR_GIT_REV=$(GIT_REV) .
	docker build -f Dockerfile.cuda -t $(CUDA_IMAGE) \
		--build-arg SEMPAIR_VERSION=$(VERSION) --build-arg SEMPAIR_GIT_REV=$(GIT_REV) .

push-images: docker-engine  ## push both images to $(REGISTRY) (after make images, docker login)
	docker push $(IMAGE)
	docker push $(CUDA_IMAGE)

# a target of its own so that `make -n images` still lists the build commands
docker-engine:
	@docker info >/dev/null 2>&1 || { \
		echo 'No Docker engine is reachable here (docker info fails): run make images where' \
			'Docker runs; make lint-images checks the Dockerfiles without one.' >&2; exit 1; }

compile: venv  ## refresh pipelines/training_pipeline.yaml
	$(VENV)/bin/sempair pipeline compile

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
