# iot-platform — every command a user or CI needs. Run `make help`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3
VENV   ?= .venv
TOOLS_DIR ?= $(CURDIR)/.tools
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Helm: built into $(TOOLS_DIR) by `make tools`; to use your own instead, run
# e.g. `make test HELM3=$$(command -v helm) HELM4=/opt/helm4/helm` (tests, drill and
# bootstrap all honour HELM3/HELM4).
export TOOLS_DIR

.PHONY: help test lint tools browser venv demo bench clean chart-readme cluster cluster-down \
  cluster-status

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

test: tools browser lint  ## create the venv, bootstrap Helm and Chromium, run ruff and every test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff over the whole tree
	$(VENV)/bin/ruff check .

tools: $(STAMP)  ## build the pinned Helm 3, Helm 4, helm-docs, kube-score and checkov into .tools/ (once)
	scripts/bootstrap-helm.sh
	scripts/bootstrap-kube.sh  # Kubernetes, etcd, CoreDNS for the live tests and make cluster (once)
	scripts/bootstrap-cluster-packages.sh  # containerd, runc, CNI plugins, iptables (once; root)
	PYTHON=$(PY) scripts/bootstrap-keycloak.sh  # Keycloak for the sign-in tests (once: ~200 MB download, ~25 s build)

browser:  ## install Debian's chromium for the drill's browser test (once; needs root)
	scripts/bootstrap-chromium.sh

venv: $(STAMP)  ## the project virtualenv with the test extras

chart-readme: $(STAMP)  ## regenerate chart/README.md (helm-docs) from values.yaml's `# --` comments
	scripts/bootstrap-tools.sh
	$(PY) -m iot_tools.chart_readme

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

bench: tools  ## benchmarks on the real stack (~5 min): prints the table, writes docs/benchmarks.md
	$(PY) -m iot_tools.bench $(BENCH_ARGS)

# The probe drill (scripts/iot_tools/drill; README "Probe drill"). VALUES: values files,
# SET: --set assignments (both space-separated); TIME_SCALE multiplies every probe timing,
# the crash-loop back-off and scenario duration (1 = real speed); DRILL_ARGS: more options
# (`.venv/bin/python -m iot_tools.drill --help`). HTML: the self-contained timeline, drawn
# from the same data as REPORT (empty: none).
VALUES     ?=
SET        ?=
TIME_SCALE ?= 0.2
REPORT     ?= demo-report.json
HTML       ?= demo-report.html
DRILL_ARGS ?=

demo: tools  ## the probe drill: faults against the live platform, probes as the kubelet runs them
	$(PY) -m iot_tools.drill $(foreach file,$(VALUES),--values '$(file)') \
	  $(foreach assignment,$(SET),--set '$(assignment)') \
	  --time-scale $(TIME_SCALE) --report '$(REPORT)' \
	  $(if $(HTML),--html '$(HTML)') $(DRILL_ARGS)

# A real single-node Kubernetes here (scripts/iot_tools/cluster; README "Run it on a real
# Kubernetes here"). CLUSTER_DIR: its state, configuration and logs (default .cluster/).
CLUSTER_DIR ?= $(CURDIR)/.cluster
export CLUSTER_DIR

cluster: tools  ## start the single-node cluster (etcd … kubelet, containerd, CoreDNS); kubeconfig in .cluster/
	$(PY) -m iot_tools.cluster up

cluster-down: $(STAMP)  ## stop the cluster and remove every process, mount, interface and rule it made
	$(PY) -m iot_tools.cluster down

cluster-status: $(STAMP)  ## the cluster's components, API /readyz, node Ready, guards and pods
	$(PY) -m iot_tools.cluster status

clean:  ## remove the venv, the tools and caches
	rm -rf $(VENV) $(TOOLS_DIR) .pytest_cache .ruff_cache
