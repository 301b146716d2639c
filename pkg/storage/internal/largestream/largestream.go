// Package largestream decides how a driver package's tests run the
// reference registry's driver suite (registry/storage/driver/testsuites),
// whose TestWriteReadLargeStreams writes and reads back 5 GiB:
//
//   - by default (`go test`, make unit) in the suite's short mode, which
//     shrinks two concurrency tests, with the 5 GiB stream left out of the
//     run rather than reported skipped: it has its own invocation;
//   - with SHOAL_LARGE_STREAM=1 (make large-streams, part of make test) the
//     5 GiB stream alone, not in short mode, so that CI runs it on every
//     driver that can hold it instead of skipping it (docs/storage.md).
//
// A TestMain calls Configure after flag.Parse and before m.Run, and only in
// a package that the Makefile's LARGE_STREAM_PKGS lists: elsewhere the
// 5 GiB stream would silently run nowhere.
package largestream

import (
	"flag"
	"fmt"
	"os"
)

// Env is the environment variable that selects the 5 GiB stream run.
const Env = "SHOAL_LARGE_STREAM"

// suiteTest is the reference suite's 5 GiB stream.
const suiteTest = "TestWriteReadLargeStreams"

// Enabled reports whether this run is the 5 GiB stream's (Env=1).
func Enabled() bool { return os.Getenv(Env) == "1" }

// Configure sets the test flags for the run Env selects. suite is the name
// of the package's test function that runs testsuites.Driver. A -run or
// -skip given on the command line is kept: whoever selects tests by hand
// sees the suite's own skip in short mode.
func Configure(suite string) error {
	only := "^" + suite + "$/^" + suiteTest + "$"
	if Enabled() {
		if flag.Lookup("test.run").Value.String() != "" {
			return nil
		}
		return set("test.run", only)
	}
	if err := set("test.short", "true"); err != nil {
		return err
	}
	if flag.Lookup("test.skip").Value.String() != "" || flag.Lookup("test.run").Value.String() != "" {
		return nil
	}
	return set("test.skip", only)
}

func set(name, value string) error {
	if err := flag.Set(name, value); err != nil {
		return fmt.Errorf("setting -%s=%s for the reference suite (%s): %w", name, value, Env, err)
	}
	return nil
}
