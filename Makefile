# Every command a newcomer or CI needs. Tools (sqlc, versitygw) are pinned in
# tools/go.mod and built into .bin/ on first use.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
SQLC := $(BIN)/sqlc
VERSITYGW := $(BIN)/versitygw

.PHONY: all build test test-deploy check generate sqlc-check demo docker bench bench-quick tools clean

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

# The one command that runs every test (CI runs exactly this). Real PostgreSQL and a
# real S3 server (versitygw) are started by the tests themselves (internal/testenv).
test: tools check test-deploy
	CI=$${CI:-true} VERSITYGW_BIN=$(VERSITYGW) $(GO) test -count=1 -timeout 40m ./...
	# The bucket fan-out and endpoint resolution under the race detector (a bench-sized
	# fan-out included): the SDK writes per-request state that must never be shared.
	CI=$${CI:-true} VERSITYGW_BIN=$(VERSITYGW) $(GO) test -race -count=1 -timeout 10m -run 'FanOut|Endpoint' ./internal/bucket/

# The Kubernetes manifests (deploy/kubernetes): rendered with the kustomize Go API, decoded
# strictly into k8s.io/api types and checked against the worker's source. Their own module
# (deploy/go.mod), so the worker's go.mod carries no Kubernetes dependency.
test-deploy:
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...

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
