package daemon

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and commit, when set at link time, replace what the Go toolchain
// stamped into the binary, for release builds made outside a git checkout:
//
//	go build -ldflags "-X github.com/shoal-dev/shoal/internal/daemon.version=v1.2.0 \
//	    -X github.com/shoal-dev/shoal/internal/daemon.commit=$(git rev-parse HEAD)" ./cmd/...
//
// They are written by the linker only.
var (
	version string
	commit  string
)

// BuildInfo is what a binary knows about the source it was built from.
type BuildInfo struct {
	// Version is the module version: a release tag, a pseudo-version
	// (v0.0.0-<time>-<commit>) for a build in a git checkout, or "devel"
	// when the toolchain recorded none (go run, go test).
	Version string
	// Commit is the VCS revision, empty when unknown.
	Commit string
	// Time is the commit's time (RFC 3339), empty when unknown.
	Time string
	// Modified is true when the working tree had uncommitted changes.
	Modified bool
	// Go is the toolchain that built the binary.
	Go string
}

// Build returns the running binary's build information: the linker's
// -X values when given, else what debug.ReadBuildInfo holds.
func Build() BuildInfo {
	info, _ := debug.ReadBuildInfo()
	return buildInfo(info, version, commit)
}

// buildInfo combines the toolchain's record (nil when the binary has none)
// with the linker overrides.
func buildInfo(info *debug.BuildInfo, ldVersion, ldCommit string) BuildInfo {
	b := BuildInfo{Version: "devel", Go: runtime.Version()}
	if info != nil {
		if v := info.Main.Version; v != "" && v != "(devel)" {
			b.Version = v
		}
		b.Go = info.GoVersion
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if ldVersion != "" {
		b.Version = ldVersion
	}
	if ldCommit != "" {
		// The linker's commit describes a build made elsewhere: the
		// toolchain's time and dirty flag belong to another tree.
		b.Commit, b.Time, b.Modified = ldCommit, "", false
	}
	return b
}

// String is the --version line without the command's name:
// "v1.2.0 (commit 3b58005c1e2f, 2026-12-03T10:00:00Z, modified) go1.26.8 linux/amd64".
func (b BuildInfo) String() string {
	s := b.Version
	if b.Commit != "" {
		c := b.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += " (commit " + c
		if b.Time != "" {
			s += ", " + b.Time
		}
		if b.Modified {
			s += ", modified"
		}
		s += ")"
	}
	return fmt.Sprintf("%s %s %s/%s", s, b.Go, runtime.GOOS, runtime.GOARCH)
}
