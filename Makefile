# kid-operator. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

BIN := $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION := v0.23.0
CONTROLLER_GEN := $(BIN)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)
# Helm, for the chart in config/helm/kid-operator, built from the Go module
# proxy like controller-gen; its version is the one hack/tools/helm/go.mod
# requires.
HELM_VERSION := $(shell awk '$$2 == "helm.sh/helm/v3" {print $$3; exit}' hack/tools/helm/go.mod)
HELM := $(BIN)/tools/helm-$(HELM_VERSION)
CHART := config/helm/kid-operator
# kubectl: the one on the PATH, else the one hack/tools/kubectl builds from
# the Go module proxy (its version is the one that module requires), so that
# make test and make deploy work on a machine that has none.
KUBECTL_VERSION := $(shell awk '$$1 == "k8s.io/kubectl" {print $$2; exit}' hack/tools/kubectl/go.mod)
# golangci-lint, built from the Go module proxy like Helm; its version is the
# one hack/tools/golangci-lint/go.mod requires, its linters are .golangci.yml's.
GOLANGCI_LINT_VERSION := $(shell awk '$$1 == "require" && $$2 == "github.com/golangci/golangci-lint/v2" {print $$3; exit}' hack/tools/golangci-lint/go.mod)
GOLANGCI_LINT := $(BIN)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)
KUBECTL ?= $(or $(shell command -v kubectl 2>/dev/null),$(BIN)/tools/kubectl-$(KUBECTL_VERSION))
# The image `make docker-build`, `docker-push` and `deploy` use. Nothing is
# published for you: set IMG to a repository your cluster pulls from.
IMG ?= ghcr.io/kid-operator/kid-operator:v0.1.0
CONTAINER_TOOL ?= docker
GINKGO_FLAGS ?=
FUZZTIME ?= 30s
BENCHTIME ?= 1s

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Everyday

.PHONY: run
run: controlplane ## Start a local control plane, the operator and a sample product.
	go build -o $(BIN)/localrun ./cmd/localrun
	KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" $(BIN)/localrun

.PHONY: test
# test/deploy renders the chart with this Helm, and kustomizes and
# deploys with this kubectl.
test: export KID_HELM := $(HELM)
test: export KID_KUBECTL := $(KUBECTL)
test: controlplane chromium verify-generated vet lint helm-check kubectl ## Build what is missing, check generated files, vet, run every test.
	KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go test ./... -count=1 -timeout 30m $(if $(GINKGO_FLAGS),-args $(GINKGO_FLAGS))

# The fault tests (test/faults, docs/design.md "Failure modes") run the
# manager as separate processes and kill them; .ci/run runs them after make
# test. KID_FAULT_SEED repeats fault 4's kill moments; KID_MANAGER_BIN runs
# them against another build of the manager.
.PHONY: test-faults
test-faults: controlplane ## Fault tests: rolling restart, leader killed, 30 leader kills between writes, the API server hung for 5 minutes (about 11 minutes).
	@echo 'fault tests: full output in $(BIN)/test-faults.log'
	@rc=0; KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go test -tags faults ./test/faults -count=1 -timeout 30m -v \
		-args -ginkgo.label-filter='!soak' -ginkgo.v -ginkgo.no-color >$(BIN)/test-faults.log 2>&1 || rc=$$?; \
	grep -E '^  (seed|injected|counted|restart): |^(ok|FAIL|PASS)|Ran [0-9]' $(BIN)/test-faults.log; \
	if [ $$rc != 0 ]; then tail -n 80 $(BIN)/test-faults.log; fi; exit $$rc

SOAK_DURATION ?= 30m
.PHONY: soak
soak: controlplane ## Fault 6: SOAK_DURATION (default 30m) of steady traffic; bounds the memory slope once the players' lists are full.
	@echo 'soak: full output in $(BIN)/soak.log'
	@rc=0; KID_SOAK_DURATION=$(SOAK_DURATION) KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go test -tags faults ./test/faults -count=1 -timeout 0 -v \
		-args -ginkgo.label-filter=soak -ginkgo.v -ginkgo.no-color >$(BIN)/soak.log 2>&1 || rc=$$?; \
	grep -E '^soak|^  (injected|counted): |^(ok|FAIL|PASS)|Ran [0-9]' $(BIN)/soak.log; \
	if [ $$rc != 0 ]; then tail -n 80 $(BIN)/soak.log; fi; exit $$rc

.PHONY: bench
bench: controlplane ## Micro-benchmarks, then the load benchmark on the local control plane (BENCH_FLAGS).
	go test ./... -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME)
	KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go run ./hack/bench $(BENCH_FLAGS)

.PHONY: bench-scale
bench-scale: controlplane ## Players with folded status at 50k, 100k, 250k: memory, etcd, restart, fold, kubectl (BENCH_SCALE_FLAGS, e.g. '-points 50000,100000 -heap-profile').
	KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go run ./hack/bench -suite=scale $(BENCH_SCALE_FLAGS)

.PHONY: bench-reads
bench-reads: controlplane ## k-ID reads after a restart over overdue sessions: read rate, urgent reads behind the backlog (BENCH_READS_FLAGS, e.g. '-read-sessions 250000 -watch-cache=false').
	KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go run ./hack/bench -suite=reads $(BENCH_READS_FLAGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s).
	go test ./internal/kid -run '^$$' -fuzz '^FuzzParseSignatureHeaders$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10s
	go test ./internal/kid -run '^$$' -fuzz '^FuzzParseEnvelope$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10s
	go test ./webhookserver -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10s

##@ Build

# What every binary reports (manager --version, kubectl kid version, kidsim
# version, the kid_build_info metric) and the image's labels: the nearest
# release tag by git describe (v0.0.0-dev before the first), the commit, and
# the commit's time, which stamps the image made by make image. Set them
# when building from sources without .git.
GIT_VERSION := $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || { v=v0.0.0-dev; git diff --quiet HEAD -- 2>/dev/null || v=$$v-dirty; echo $$v; })
VERSION ?= $(GIT_VERSION)
GIT_REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
REVISION ?= $(GIT_REVISION)
GIT_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
SOURCE_DATE_EPOCH ?= $(GIT_EPOCH)
LDFLAGS := -X github.com/kid-operator/kid-operator/internal/version.version=$(VERSION) -X github.com/kid-operator/kid-operator/internal/version.revision=$(REVISION)

# -trimpath: the binary holds no path of the machine that built it, so the
# same Go and sources build it byte for byte anywhere (the Dockerfile
# runs the same command).
.PHONY: build
build: ## Build the manager, kidsim and the kubectl plugin (kubectl-kid) into bin/, their version stamped in.
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kidsim ./cmd/kidsim
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kubectl-kid ./cmd/kubectl-kid

# kubectl runs kubectl-kid as `kubectl kid`, and (1.26 and later) completes
# it through kubectl_complete-kid: both go on the PATH, in PLUGIN_DIR.
PLUGIN_DIR ?= $(or $(shell go env GOBIN),$(shell go env GOPATH)/bin)
.PHONY: install-plugin
install-plugin: ## Build kubectl-kid and install it with kubectl_complete-kid (its shell completion) into PLUGIN_DIR (default: go env GOBIN, or GOPATH/bin).
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kubectl-kid ./cmd/kubectl-kid
	install -d '$(PLUGIN_DIR)'
	install -m 0755 $(BIN)/kubectl-kid hack/kubectl_complete-kid '$(PLUGIN_DIR)/'

# make image builds the Dockerfile's image without a container engine
# (hack/image, with go-containerregistry): make build's manager for linux
# (GOARCH as go env says, or as given: make image GOARCH=arm64), on the
# base files hack/image/rootfs and Debian's ca-certificates provide, as an
# OCI image layout in IMAGE_DIR. Push it with any registry client, e.g.
# crane push bin/image $(IMG) (README, "Deploying").
IMAGE_DIR ?= $(BIN)/image
.PHONY: image
image: export GOOS := linux
image: export GOARCH := $(or $(GOARCH),$(shell go env GOARCH))
image: build ## Build the image as an OCI layout in bin/image, without Docker (make image-push IMG=... pushes it).
	cd hack/image && env -u GOOS -u GOARCH go run . -binary $(BIN)/manager -out $(abspath $(IMAGE_DIR)) \
		-version '$(VERSION)' -revision '$(REVISION)' -created $(SOURCE_DATE_EPOCH)

# crane, at the version hack/image/go.mod pins (a tool of that module), reads
# registry credentials as docker does (~/.docker/config.json: crane auth
# login or docker login) and prints the reference it pushed, by digest.
.PHONY: image-push
image-push: ## Push the layout make image wrote to IMG with crane, and print IMG's digest.
	@test -f $(IMAGE_DIR)/index.json || { echo 'image-push: no image in $(IMAGE_DIR): run make image first'; exit 1; }
	cd hack/image && go tool crane push $(abspath $(IMAGE_DIR)) $(IMG)

# The browser tests (test/browser) drive a real Chromium; KID_CHROMIUM
# may name another Chromium or Chrome binary.
CHROMIUM_INSTALL := apt-get update && apt-get install -y chromium

.PHONY: chromium
chromium: ## Install Chromium, which the browser tests drive, when it is missing (as root, with apt-get).
	@if [ -n "$$KID_CHROMIUM" ]; then command -v "$$KID_CHROMIUM" >/dev/null || { echo "KID_CHROMIUM=$$KID_CHROMIUM is not an executable"; exit 1; }; \
	elif command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo 'installing Chromium for the browser tests (test/browser)'; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo 'make test needs Chromium for the browser tests (test/browser). Install it with:'; \
		echo '    $(CHROMIUM_INSTALL)'; \
		exit 1; \
	fi

.PHONY: controlplane
controlplane: ## Build etcd and kube-apiserver from the Go module proxy into bin/k8s (once).
	./hack/build-controlplane.sh >/dev/null

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the markers, and copy them into the Helm chart.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases
	go run ./hack/helmsync

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when generated files are not committed as generated.
	@git diff --exit-code -- config api || { echo 'generated files are out of date: run make manifests generate and commit'; exit 1; }
	@test -z "$$(git status --porcelain -- config api)" || { git status --porcelain -- config api; echo 'generated files are not committed'; exit 1; }

.PHONY: vet
vet: ## gofmt check and go vet.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'run gofmt -w on the files above'; exit 1; }
	go vet ./...
	go vet -tags faults ./test/faults

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint with .golangci.yml (built from the Go module proxy into bin/tools/ once).
	$(GOLANGCI_LINT) run --allow-parallel-runners ./...

$(GOLANGCI_LINT):
	mkdir -p $(BIN)/tools
	cd hack/tools/golangci-lint && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(GOLANGCI_LINT_VERSION)" \
		-o $@.tmp github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	mv $@.tmp $@

##@ Deploy

# make image (above) builds the image without a container engine; the
# Dockerfile builds the same where one runs (a developer's machine, a CI job).
# The Dockerfile's builder: the Go this machine builds with (so the image's
# manager is make image's, byte for byte), pinned by digest. GOLANG_DIGEST
# empty: crane resolves the tag's digest now and the build prints it; set
# it (GOLANG_DIGEST=sha256:...) to build again from the very same builder.
GOLANG_IMAGE ?= golang:$(patsubst go%,%,$(shell go env GOVERSION))
GOLANG_DIGEST ?=

.PHONY: docker-build
docker-build: ## Build the image IMG from the Dockerfile (needs a running container engine; make image needs none).
	@$(CONTAINER_TOOL) info >/dev/null 2>&1 || { \
		echo 'docker-build: no container engine answers here ($(CONTAINER_TOOL) info failed), so the image cannot be built on this machine.'; \
		echo 'make image builds the same image without one (an OCI layout in bin/image); make image-push IMG=$(IMG) pushes it.'; \
		exit 1; }
	@digest='$(GOLANG_DIGEST)'; \
	if [ -z "$$digest" ]; then digest=$$(cd hack/image && go tool crane digest $(GOLANG_IMAGE)) || exit 1; fi; \
	echo "builder: $(GOLANG_IMAGE)@$$digest (GOLANG_DIGEST=$$digest builds from it again)"; \
	set -x; $(CONTAINER_TOOL) build --build-arg GOLANG_IMAGE=$(GOLANG_IMAGE)@$$digest \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image IMG (needs a running container engine).
	@$(CONTAINER_TOOL) info >/dev/null 2>&1 || { \
		echo 'docker-push: no container engine answers here ($(CONTAINER_TOOL) info failed): push from where the image was built (see make docker-build).'; \
		exit 1; }
	$(CONTAINER_TOOL) push $(IMG)

# deploy and undeploy apply config/default through a kustomization in
# bin/deploy that sets the image to IMG (kustomize's images:), so that
# kubectl's built-in kustomize suffices and config/ stays unchanged.
# undeploy leaves the CRDs, and with them every KidProduct, KidEvent and
# KidUser in the cluster, and the namespace (products may live there),
# unless UNDEPLOY_CRDS=true.
UNDEPLOY_CRDS ?= false

.PHONY: deploy-kustomization
deploy-kustomization: ## Write bin/deploy/kustomization.yaml: config/default with the image IMG.
	@case '$(IMG)' in ''|*' '*) echo 'IMG must name an image, e.g. make deploy IMG=registry.example.com/kid-operator:v0.1.0'; exit 1;; esac
	@mkdir -p $(BIN)/deploy
	@img='$(IMG)'; digest=; tag=; \
	case "$$img" in *@*) digest=$${img#*@}; img=$${img%@*};; esac; \
	case "$${img##*/}" in *:*) tag=$${img##*:}; img=$${img%:*};; esac; \
	if [ -z "$$digest" ] && [ -z "$$tag" ]; then tag=latest; fi; \
	{ echo '# Written by make deploy-kustomization; not committed.'; \
	  echo 'resources:'; echo '- ../../config/default'; \
	  echo 'images:'; echo '- name: ghcr.io/kid-operator/kid-operator'; echo "  newName: $$img"; \
	  if [ -n "$$tag" ]; then echo "  newTag: \"$$tag\""; fi; \
	  if [ -n "$$digest" ]; then echo "  digest: $$digest"; fi; \
	} >$(BIN)/deploy/kustomization.yaml

.PHONY: deploy
deploy: manifests deploy-kustomization kubectl ## Apply config/default with the image IMG to the current kubectl context.
	$(KUBECTL) apply --server-side --field-manager=kid-operator-deploy -k $(BIN)/deploy

.PHONY: undeploy
undeploy: deploy-kustomization kubectl ## Delete what deploy applied; the CRDs, every kid.dev object and the namespace stay unless UNDEPLOY_CRDS=true.
	@mkdir -p $(BIN)/undeploy
	@{ echo '# Written by make undeploy; not committed.'; echo 'resources:'; echo '- ../deploy'; \
	  if [ '$(UNDEPLOY_CRDS)' != true ]; then \
	    echo 'patches:'; \
	    echo '- target: {kind: CustomResourceDefinition}'; echo '  patch: |-'; \
	    echo '    $$patch: delete'; echo '    apiVersion: apiextensions.k8s.io/v1'; \
	    echo '    kind: CustomResourceDefinition'; echo '    metadata: {name: any}'; \
	    echo '- target: {kind: Namespace}'; echo '  patch: |-'; \
	    echo '    $$patch: delete'; echo '    apiVersion: v1'; \
	    echo '    kind: Namespace'; echo '    metadata: {name: any}'; \
	  fi; } >$(BIN)/undeploy/kustomization.yaml
	$(KUBECTL) delete --ignore-not-found -k $(BIN)/undeploy

.PHONY: kubectl
kubectl: $(if $(filter $(BIN)/%,$(KUBECTL)),$(KUBECTL)) ## Build kubectl from the Go module proxy when none is on the PATH.

$(BIN)/tools/kubectl-%:
	mkdir -p $(BIN)/tools
	cd hack/tools/kubectl && minor=$$(echo $* | cut -d. -f2) && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
		-X k8s.io/component-base/version.gitVersion=$(subst v0.,v1.,$*) -X k8s.io/component-base/version.gitMajor=1 \
		-X k8s.io/component-base/version.gitMinor=$$minor" -o $@.tmp .
	mv $@.tmp $@

##@ Helm chart

.PHONY: helm
helm: $(HELM) ## Build Helm (bin/tools/helm-<version>) from the Go module proxy.

.PHONY: helm-check
helm-check: $(HELM) ## helm lint the chart and render it with the default values and with every option on.
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/all-on-values.yaml
	$(HELM) template kid-operator $(CHART) -n kid-system >/dev/null
	$(HELM) template kid-operator $(CHART) -n kid-system -f $(CHART)/ci/all-on-values.yaml >/dev/null

# Helm's default Kubernetes version (what `helm template` renders for, and
# the chart's kubeVersion is checked against) is stamped in as Helm's own
# release build does: 1.<minor of the client-go it was built with>.
$(HELM):
	mkdir -p $(BIN)/tools
	cd hack/tools/helm && minor=$$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2) && \
		CGO_ENABLED=0 GOBIN=$(BIN)/tools go install -trimpath -ldflags "-s -w \
		-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$minor \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$minor" \
		helm.sh/helm/v3/cmd/helm
	mv $(BIN)/tools/helm $@

$(CONTROLLER_GEN):
	mkdir -p $(BIN)/tools
	cd hack/tools && GOBIN=$(BIN)/tools go install sigs.k8s.io/controller-tools/cmd/controller-gen
	mv $(BIN)/tools/controller-gen $@
