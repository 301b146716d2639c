// Package proto holds Shoal's gRPC service definitions. The generated Go code
// is committed: trackerpb for shoal.tracker.v1 (announces) and peerpb for
// shoal.peer.v1 (metainfo and piece exchange). Edit the .proto files, then
// run `go generate ./proto/...` (needs protoc on PATH).
package proto

//go:generate sh gen.sh
