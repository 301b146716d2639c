# Shoal's build and test entry points. `make test` is the whole suite, the
# one command CI (.ci/run) runs.

GO          ?= go
# Pinned so that a new staticcheck release cannot fail an unchanged tree.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Bounds one `go test` binary; the e2e packages build tools and start
# servers, the longest (HDFS) starts a JVM.
TEST_TIMEOUT ?= 30m
# The packages `make unit` tests: all, or e.g. TEST_PKGS=./pkg/gc/... .
TEST_PKGS   ?= ./...
# How much each Fuzz* target runs in `make fuzz`: a count of inputs (about
# 3-15 s each here), not a duration. With a duration, Go 1.26's fuzzing
# coordinator can fail a target that found nothing at the deadline itself
# ("context deadline exceeded", go.dev/issue/75804, fixed in Go 1.27); a
# count sets no deadline. Longer runs: make fuzz FUZZTIME=2000000x (or 10m).
FUZZTIME    ?= 40000x
# Directories holding Go code (not .cache/, where tools are built): what
# gofmt checks and where `make fuzz` looks for Fuzz targets.
GO_DIRS     := $(wildcard cmd internal pkg proto e2e hack)

.PHONY: all build test fmt vet staticcheck unit fuzz bench clean

all: build

# A whole Shoal on loopback, no root: an origin, a tracker and 4 peer-agents
# started from binaries built into .cache/bin, an image pushed and pulled
# through every agent at once, the origin's egress against direct pulls,
# everything stopped at the end (README, Quick start).
# Knobs: DEMO_FLAGS='--agents 8 --size 512MiB' (go run ./cmd/shoalctl demo -h).
.PHONY: demo
demo:
	@echo "go run ./cmd/shoalctl demo $(DEMO_FLAGS)   (the first run compiles Shoal and its dependencies: a few minutes)"
	@$(GO) run ./cmd/shoalctl demo $(DEMO_FLAGS)

# OCI images of origin, tracker, peer-agent and shoalctl: static binaries
# (CGO_ENABLED=0, cross-built with GOARCH) on scratch, run as a non-root
# user, one linux/amd64 + linux/arm64 index per command, assembled by
# hack/images with go-containerregistry (no Dockerfile, no base image).
# Pushed as $(REGISTRY)/<command>:$(TAG) to any registry, Shoal's origin
# included (make images REGISTRY=127.0.0.1:5000/shoal); without REGISTRY
# written as an OCI layout to .cache/images. TAG defaults to git describe.
# Knobs: PLATFORMS=linux/amd64, COMMANDS=origin,peer-agent.
REGISTRY  ?=
TAG       ?=
PLATFORMS ?= linux/amd64,linux/arm64
COMMANDS  ?= origin,tracker,peer-agent,shoalctl
.PHONY: images
images:
	$(GO) run ./hack/images --registry '$(REGISTRY)' --tag '$(TAG)' --platforms '$(PLATFORMS)' --commands '$(COMMANDS)'

# Builds bin/<name> for every cmd/<name> that has a main package; commands
# not written yet are skipped.
build:
	@mains=$$($(GO) list -e -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./cmd/... 2>/dev/null); \
	if [ -z "$$mains" ]; then echo "build: no commands with a main package under cmd/"; exit 0; fi; \
	mkdir -p bin && echo "go build -o bin/" $$mains && $(GO) build -o bin/ $$mains

test: fmt vet staticcheck fuzz unit large-streams

fmt:
	@out=$$(gofmt -l $(GO_DIRS) $(wildcard *.go)); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi; \
	echo "gofmt: ok"

vet:
	$(GO) vet ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run go mod tidy (go mod tidy -diff shows what it changes)"; exit 1; }
	@echo "go mod tidy: ok"

staticcheck:
	$(GO) run $(STATICCHECK) ./...

# -count=1: the e2e tests run binaries built from other packages, which
# Go's test cache cannot see, so a cached pass could hide a new failure.
# internal/testsummary prints go test's result lines, the output of failed
# and skipped tests, and a last line with the totals (tests run, failed,
# skipped), and exits with go test's status.
unit:
	$(GO) run ./internal/testsummary -- $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TEST_PKGS)

# The reference driver suite's 5 GiB stream (TestWriteReadLargeStreams),
# which `make unit` leaves out of these packages' runs, alone on each, one
# package at a time and without the race detector (docs/storage.md, "The
# reference suite in CI", has the measurements; gcs runs on fake-gcs-server
# patched to stream uploads to disk). GOMEMLIMIT holds the in-memory
# driver's 5 GiB at about 6 GiB of RAM instead of 9.
LARGE_STREAM_PKGS ?= ./pkg/storage/inmemory ./pkg/storage/s3 ./pkg/storage/azure ./pkg/storage/gcs
.PHONY: large-streams
large-streams:
	SHOAL_LARGE_STREAM=1 GOMEMLIMIT=6GiB $(GO) run ./internal/testsummary -- $(GO) test -p 1 -count=1 -timeout $(TEST_TIMEOUT) $(LARGE_STREAM_PKGS)

# Runs every `func FuzzXxx` found in a _test.go file for FUZZTIME, one
# target at a time (go test -fuzz takes a single target and package).
fuzz:
	@set -e; found=0; \
	for f in $$(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' $(GO_DIRS) | sort); do \
		dir=$$(dirname $$f); \
		for name in $$(grep -oE '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
			found=$$((found+1)); \
			echo "go test -run='^$$' -fuzz='^$$name\$$' -fuzztime=$(FUZZTIME) ./$$dir"; \
			$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) ./$$dir; \
		done; \
	done; \
	echo "fuzz: $$found targets run for $(FUZZTIME) each"

# The origin against registry:2, the origin against itself with its
# deadlines and caps off (what hardening costs: at most 5%), then what
# access control costs (bench-auth). docs/benchmarks.md has the method and
# today's figures.
bench:
	$(GO) run ./e2e/bench
	$(GO) run ./e2e/bench -against limits-off
	$(GO) run ./e2e/authbench

# Access control (docs/benchmarks.md, "Access control"): manifest
# GETs with auth on vs off, the agent's authorization calls under a storm of
# blob requests, the CPU of P2P capability and signature checks per GiB.
# Knobs: AUTHBENCH_FLAGS='-quick' or '-only origin|agent|p2p' (go run ./e2e/authbench -h).
.PHONY: bench-auth
bench-auth:
	$(GO) run ./e2e/authbench $(AUTHBENCH_FLAGS)

clean:
	rm -rf bin .cache/e2e

# Origin on HDFS next to hdfs-cli (docs/benchmarks.md): starts its own
# MiniDFSCluster; needs java, mvn and hdfs-cli (apt-get install hdfs-cli).
.PHONY: bench-hdfs
bench-hdfs:
	$(GO) run ./e2e/hdfsbench

# GC over 10,000 manifests and ~50,000 blobs on the filesystem driver, and its
# effect on concurrent pull latency (docs/gc.md). Prints wall time, storage
# calls and p99 pull latency with and without a run.
.PHONY: bench-gc
bench-gc:
	GC_BENCH_MANIFESTS=10000 $(GO) test -run '^$$' -bench Collect -benchtime 1x -timeout 30m ./pkg/gc/
	GC_BENCH_MANIFESTS=10000 $(GO) test -run '^$$' -bench PullLatency -benchtime 1x -timeout 30m ./e2e/gccompat/

# P2P swarm benchmark (docs/benchmarks.md, "Swarm"): N agents pulling
# one layer at once against the same hosts pulling straight from the origin,
# one agent's cold/warm pulls, the tracker's announce rate. As root each host
# gets its own network namespace with a tc-shaped link; otherwise loopback.
# Knobs: SWARMBENCH_FLAGS='-n 10 -size 32MiB -rate 100mbit' (go run ./e2e/swarmbench -h).
.PHONY: bench-swarm
bench-swarm:
	$(GO) run ./e2e/swarmbench $(SWARMBENCH_FLAGS)

# The peer protocol's data paths side by side (docs/p2p.md, "Piece
# data path"): one blob over loopback with internal/piecewire (plain TCP and
# sendfile; TLS 1.3) and with today's gRPC Exchange stream, printing MB/s and
# the sender's and receiver's CPU-seconds per GiB. Run on a quiet machine.
# Knobs: PIECEWIREBENCH_FLAGS='-quick' or '-size 4GiB -modes plain,grpc' (go run ./e2e/piecewirebench -h).
.PHONY: bench-piecewire
bench-piecewire:
	$(GO) run ./e2e/piecewirebench $(PIECEWIREBENCH_FLAGS)

# The origin on each object store next to registry:2 on the same store
# (docs/benchmarks.md, "Object stores"): push and pull MB/s of a 256 MiB blob,
# manifest HEAD req/s, store requests and CPU seconds per push and per pull,
# in 5 alternating rounds, against the test servers e2e/testenv installs
# (versitygw, Azurite, fake-gcs-server). Run on a quiet machine.
# Knobs: STORAGEBENCH_FLAGS='-quick' or '-stores s3 -size 64 -rounds 3' (go run ./e2e/objectstorebench -h).
.PHONY: bench-storage
bench-storage:
	$(GO) run ./e2e/objectstorebench $(STORAGEBENCH_FLAGS)
