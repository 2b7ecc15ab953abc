# HyperDrive Accelerator. `make demo` runs the main job, `make test` runs every test tier.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help venv binaries lint test test-unit test-runtime test-cluster test-images test-e2e demo \
	demo-down crd image image-docker clean

help:
	@echo "make demo      start a local cluster, the operator and examples/hda.yaml"
	@echo "make demo-down stop the demo's operator and cluster"
	@echo "make test      lint, then every test tier (unit, runtime, cluster)"
	@echo "make lint      ruff and mypy --strict"
	@echo "make crd       regenerate crds/ from the models, and the chart's copies"
	@echo "make image     build the runtime and Valkey images with BuildKit, push them to the"
	@echo "               cluster's loopback registry (root, no Docker; REGISTRY=http://127.0.0.1:PORT)"
	@echo "make image-docker  build the runtime image with Docker instead"

$(BIN)/hda: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	@touch $@

venv: $(BIN)/hda

# Builds kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok and helm once into
# ~/.cache/hda/bin/<version-key>; a no-op when they are there.
binaries:
	@bash hack/build-binaries.sh >/dev/null

lint: venv
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; a tier with no tests is an error here too.
test: lint binaries
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-runtime: venv
	$(BIN)/pytest tests/runtime $(PYTEST_ARGS)

test-cluster: venv binaries
	$(BIN)/pytest tests/cluster $(PYTEST_ARGS)

test-images: venv binaries
	$(BIN)/pytest tests/images $(PYTEST_ARGS)

# Real nodes (kubelet + containerd): needs root; see README "Real nodes".
test-e2e: venv binaries
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

demo: venv binaries
	bash hack/demo.sh

demo-down: venv
	bash hack/demo.sh down

# The chart cannot read files outside itself: it carries copies, checked equal by tests.
crd: venv
	$(BIN)/hda crd > crds/hyperdriveaccelerators.hda.shitops.dev.yaml
	cp crds/hyperdriveaccelerators.hda.shitops.dev.yaml charts/hda-operator/files/crds/
	cp deploy/argocd/health.lua charts/hda-operator/files/argocd/health.lua

# The Dockerfile built by BuildKit on a Debian base made here; see README "Images".
image: venv binaries
	$(BIN)/hda cluster images $(if $(REGISTRY),--registry $(REGISTRY))

image-docker:
	docker build -t hyperdrive-accelerator:$$($(BIN)/python -c 'import hda; print(hda.__version__)') .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
