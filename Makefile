# Every command a newcomer or CI needs. Tools (sqlc, versitygw) are pinned in
# tools/go.mod and built into .bin/ on first use.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
SQLC := $(BIN)/sqlc
VERSITYGW := $(BIN)/versitygw

.PHONY: all build test test-deploy test-alerts test-alerts-v3 promtool check generate sqlc-check demo docker bench bench-quick tools clean

all: build

build:
	$(GO) build ./...
	$(GO) build -o bg-worker ./cmd/bg-worker

$(SQLC): tools/go.mod tools/go.sum
	mkdir -p $(BIN) && cd tools && $(GO) build -o $(SQLC) github.com/sqlc-dev/sqlc/cmd/sqlc

$(VERSITYGW): tools/go.mod tools/go.sum
	mkdir -p $(BIN) && cd tools && $(GO) build -o $(VERSITYGW) github.com/versity/versitygw/cmd/versitygw

tools: $(SQLC) $(VERSITYGW)

# Regenerate internal/store/dbsqlc from queries/ and migrations/.
generate: $(SQLC)
	UPDATE_GOLDEN=1 $(GO) test -count=1 -run TestDefaultRenderingIsSqlcSchema ./internal/uploadmap/
	$(SQLC) generate

# Fails when the committed generated code differs from what sqlc would generate.
sqlc-check: $(SQLC)
	$(SQLC) diff

# Static checks: formatting, vet, generated code current.
check: sqlc-check
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^tools/')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	# go.mod and go.sum say exactly what the code imports (direct vs indirect, nothing stale).
	$(GO) mod tidy -diff
	cd deploy && $(GO) mod tidy -diff

# The one command that runs every test (CI runs exactly this). Real PostgreSQL and a
# real S3 server (versitygw) are started by the tests themselves (internal/testenv).
test: tools check test-deploy test-alerts
	CI=$${CI:-true} VERSITYGW_BIN=$(VERSITYGW) $(GO) test -count=1 -timeout 40m ./...
	# The bucket fan-out and endpoint resolution under the race detector (a bench-sized
	# fan-out included): the SDK writes per-request state that must never be shared.
	CI=$${CI:-true} VERSITYGW_BIN=$(VERSITYGW) $(GO) test -race -count=1 -timeout 10m -run 'FanOut|Endpoint' ./internal/bucket/

# The Kubernetes manifests (deploy/kubernetes): rendered with the kustomize Go API, decoded
# strictly into k8s.io/api types and checked against the worker's source. Their own module
# (deploy/go.mod), so the worker's go.mod carries no Kubernetes dependency.
test-deploy:
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...

# promtool, Prometheus' own checker, for the alert rules and dashboard (deploy/prometheus,
# deploy/grafana): Debian's package, pinned to Prometheus $(PROMTOOL_VERSION)x (bookworm),
# installed with apt-get on first use (about 15 s; building Prometheus 3's promtool from
# source takes minutes, see test-alerts-v3). PROMTOOL=/path and PROMTOOL_VERSION= use another.
PROMTOOL_VERSION ?= 2.42.
PROMTOOL ?= $(shell command -v promtool 2>/dev/null || echo /usr/bin/promtool)

promtool:
	@if ! command -v $(PROMTOOL) >/dev/null 2>&1; then \
		echo "installing promtool (Debian's prometheus package, $(PROMTOOL_VERSION)x)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
			|| { echo "could not install promtool: apt-get install prometheus, or set PROMTOOL=/path/to/promtool"; exit 1; }; \
	fi
	@v=$$($(PROMTOOL) --version 2>&1 | head -n1); echo "$$v"; \
	case "$$v" in *"version $(PROMTOOL_VERSION)"*) ;; \
		*) echo "$(PROMTOOL) is not promtool $(PROMTOOL_VERSION)x (set PROMTOOL_VERSION= to accept it)"; exit 1;; esac

# The alert rules: promtool check rules and config, the rules' unit tests (each alert fires
# and stays quiet: deploy/prometheus/alerts_test.yml), every dashboard expression parsed,
# and each alert broken both ways must fail its unit tests (internal/metrics/deploy_test.go).
test-alerts: promtool
	$(PROMTOOL) check rules deploy/prometheus/alerts.yml
	$(PROMTOOL) check config deploy/prometheus/prometheus.yml
	cd deploy/prometheus && $(PROMTOOL) test rules alerts_test.yml
	PROMTOOL=$(PROMTOOL) $(GO) test -count=1 -run 'TestDashboardExpressionsParse|TestAlertTestsCatchBrokenRules' ./internal/metrics/

# The same checks with Prometheus 3's promtool, pinned in tools/promtool/go.mod (its own
# module: in tools/go.mod it would move sqlc's and versitygw's dependencies) and built into
# .bin/ (about 9 CPU-minutes on a fresh cache). Not part of `make test`.
$(BIN)/promtool-v3: tools/promtool/go.mod tools/promtool/go.sum
	mkdir -p $(BIN) && cd tools/promtool && $(GO) build -o $(BIN)/promtool-v3 github.com/prometheus/prometheus/cmd/promtool

test-alerts-v3: $(BIN)/promtool-v3
	$(MAKE) test-alerts PROMTOOL=$(BIN)/promtool-v3 PROMTOOL_VERSION=

# The local stack without Docker: a throwaway PostgreSQL and versitygw, demo data, and 3
# replicas with interleaved logs; Ctrl-C stops everything. Flags go in ARGS, e.g.
#   make demo ARGS="--replicas 5 --interval 1s --uploads 1000 --kill-after 20s"
demo: $(VERSITYGW)
	$(GO) run ./cmd/bg-demo --versitygw $(VERSITYGW) $(ARGS)

# The image (needs a Docker engine): docker compose up --build --scale bg-worker=3 builds it too.
docker:
	docker build -t $${BG_WORKER_IMAGE:-bg-worker:local} .

# Benchmarks (BENCHMARKS.md): full run ~17 minutes on 2 cores; bench-quick ~5 minutes.
bench: tools
	VERSITYGW_BIN=$(VERSITYGW) $(GO) run ./cmd/bg-bench $(BENCH_ARGS)

bench-quick: tools
	VERSITYGW_BIN=$(VERSITYGW) $(GO) run ./cmd/bg-bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(BIN) bg-worker
