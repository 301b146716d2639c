// Package gc is the origin's garbage collector: retention rules that delete
// tags and manifests, and an online mark-and-sweep that frees the blobs no
// manifest references any more, over storage laid out exactly as registry:2
// lays it out.
//
// The package keeps decisions pure and the I/O at the edges: Plan decides
// which tags and manifests retention removes from a Snapshot, Mark decides
// which blobs are reachable from an Inventory, and the Runner is the only
// part that reads and deletes through a storage.Driver. Only one origin node
// runs a collection at a time, guarded by a Lease kept in storage.
//
// Deletions are safe while pushes go on, provided the origin follows the
// write order described in docs/gc.md: blob data, then the link, then
// Guard.Check before acknowledging; GC writes its pending-deletion set,
// then re-reads the links, then deletes, then removes the set.
package gc
