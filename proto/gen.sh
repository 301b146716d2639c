#!/bin/sh
# Regenerates the Go code for the .proto files in this directory. Run through
# `go generate ./proto/...`. Needs protoc (Debian: protobuf-compiler); the Go
# plugins are built from the versions pinned in go.mod's tool block, so the
# output does not depend on what happens to be installed.
set -eu
cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
protoc -I . \
	--plugin=protoc-gen-go="$bin/protoc-gen-go" \
	--plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
	--go_out=. --go_opt=module=github.com/shoal-dev/shoal/proto \
	--go-grpc_out=. --go-grpc_opt=module=github.com/shoal-dev/shoal/proto \
	tracker/v1/tracker.proto peer/v1/peer.proto
