# kid-operator. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

BIN := $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION := v0.23.0
CONTROLLER_GEN := $(BIN)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)
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
test: controlplane chromium verify-generated vet ## Build what is missing, check generated files, vet, run every test.
	KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go test ./... -count=1 $(if $(GINKGO_FLAGS),-args $(GINKGO_FLAGS))

# The fault tests (internal/faults, docs/design.md "Failure modes") run the
# manager as separate processes and kill them; .ci/run runs them after make
# test. KID_FAULT_SEED repeats fault 4's kill moments; KID_MANAGER_BIN runs
# them against another build of the manager.
.PHONY: test-faults
test-faults: controlplane ## Fault tests: rolling restart, leader killed, 50 crashes between writes (about 4 minutes).
	@echo 'fault tests: full output in $(BIN)/test-faults.log'
	@rc=0; KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go test -tags faults ./internal/faults -count=1 -timeout 20m -v \
		-args -ginkgo.label-filter='!soak' -ginkgo.v -ginkgo.no-color >$(BIN)/test-faults.log 2>&1 || rc=$$?; \
	grep -E '^  (seed|injected|counted|restart): |^(ok|FAIL|PASS)|Ran [0-9]' $(BIN)/test-faults.log; \
	if [ $$rc != 0 ]; then tail -n 80 $(BIN)/test-faults.log; fi; exit $$rc

SOAK_DURATION ?= 30m
.PHONY: soak
soak: controlplane ## Fault 6: SOAK_DURATION (default 30m) of steady traffic; prints the memory and goroutine slopes.
	@echo 'soak: full output in $(BIN)/soak.log'
	@rc=0; KID_SOAK_DURATION=$(SOAK_DURATION) KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go test -tags faults ./internal/faults -count=1 -timeout 0 -v \
		-args -ginkgo.label-filter=soak -ginkgo.v -ginkgo.no-color >$(BIN)/soak.log 2>&1 || rc=$$?; \
	grep -E '^soak|^  (injected|counted): |^(ok|FAIL|PASS)|Ran [0-9]' $(BIN)/soak.log; \
	if [ $$rc != 0 ]; then tail -n 80 $(BIN)/soak.log; fi; exit $$rc

.PHONY: bench
bench: controlplane ## Micro-benchmarks, then the load benchmark on the local control plane (BENCH_FLAGS).
	go test ./... -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME)
	KUBEBUILDER_ASSETS="$$(./hack/build-controlplane.sh)" go run ./hack/bench $(BENCH_FLAGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s).
	go test ./internal/kid -run '^$$' -fuzz '^FuzzParseSignatureHeaders$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10s
	go test ./internal/kid -run '^$$' -fuzz '^FuzzParseEnvelope$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10s
	go test ./webhookserver -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10s

##@ Build

.PHONY: build
build: ## Build the manager and kidsim into bin/.
	CGO_ENABLED=0 go build -o $(BIN)/manager ./cmd/manager
	CGO_ENABLED=0 go build -o $(BIN)/kidsim ./cmd/kidsim

# The browser tests (internal/browsertest) drive a real Chromium; KID_CHROMIUM
# may name another Chromium or Chrome binary.
CHROMIUM_INSTALL := apt-get update && apt-get install -y chromium

.PHONY: chromium
chromium: ## Install Chromium, which the browser tests drive, when it is missing (as root, with apt-get).
	@if [ -n "$$KID_CHROMIUM" ]; then command -v "$$KID_CHROMIUM" >/dev/null || { echo "KID_CHROMIUM=$$KID_CHROMIUM is not an executable"; exit 1; }; \
	elif command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo 'installing Chromium for the browser tests (internal/browsertest)'; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo 'make test needs Chromium for the browser tests (internal/browsertest). Install it with:'; \
		echo '    $(CHROMIUM_INSTALL)'; \
		exit 1; \
	fi

.PHONY: controlplane
controlplane: ## Build etcd and kube-apiserver from the Go module proxy into bin/k8s (once).
	./hack/build-controlplane.sh >/dev/null

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases

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
	go vet -tags faults ./internal/faults

.PHONY: deploy
deploy: manifests ## Apply config/default to the current kubectl context.
	kubectl apply -k config/default

$(CONTROLLER_GEN):
	mkdir -p $(BIN)/tools
	cd hack/tools && GOBIN=$(BIN)/tools go install sigs.k8s.io/controller-tools/cmd/controller-gen
	mv $(BIN)/tools/controller-gen $@
