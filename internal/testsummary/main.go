// Command testsummary runs `go test -json ...` and prints what a person
// wants from it: the package result lines, the output of the tests that
// failed or were skipped, build errors, and at the end one total line,
//
//	total: 1234 tests run, 2 failed, 17 skipped (subtests counted); packages: 61, 1 failed
//
// then exits with go test's status (1 if a test failed even so). The
// Makefile's unit target runs the suite through it:
//
//	go run ./internal/testsummary -- go test -race -count=1 ./...
//
// -json is added to the go test command when it is not there.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) < 2 || args[1] != "test" {
		fmt.Fprintln(os.Stderr, "usage: testsummary -- go test [flags] [packages]")
		os.Exit(2)
	}
	if !slices.Contains(args, "-json") {
		args = slices.Insert(args, 2, "-json")
	}
	// Ctrl-C reaches go test through the terminal's process group; this
	// process waits for it to print what it has and exit.
	signal.Ignore(syscall.SIGINT)
	os.Exit(run(args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(stderr, "testsummary:", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "testsummary:", err)
		return 1
	}
	s := newSummary(stdout)
	if err := s.read(out); err != nil {
		fmt.Fprintln(stderr, "testsummary: reading go test's output:", err)
	}
	waitErr := cmd.Wait()
	s.total()
	var exit *exec.ExitError
	switch {
	case errors.As(waitErr, &exit):
		return max(exit.ExitCode(), 1)
	case waitErr != nil:
		fmt.Fprintln(stderr, "testsummary:", waitErr)
		return 1
	case s.failed > 0 || s.pkgFailed > 0:
		return 1
	}
	return 0
}
