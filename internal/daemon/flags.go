package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrDone is what Parse returns once it has answered --help or --version:
// the command did what was asked and exits 0 (see Exit).
var ErrDone = errors.New("nothing more to do")

// Parse parses args into fs, the command's flags, and answers --help (or
// -h) with the usage on stdout and --version with the build (Build) itself,
// returning ErrDone after either. about is printed between the usage line
// and the flags: what the command is and an example or two. A flag error
// says how to list the flags; positional arguments are refused, since none
// of the daemons takes any.
func Parse(fs *flag.FlagSet, about string, args []string, stdout io.Writer) error {
	showVersion := fs.Bool("version", false, "print the version and exit")
	// The flag package prints a bad flag and the whole usage to fs's
	// output; the error alone, returned, says more in less.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage(fs, about, stdout)
		return ErrDone
	case err != nil:
		return fmt.Errorf("%w (%s --help lists the flags)", err, fs.Name())
	case *showVersion:
		fmt.Fprintln(stdout, fs.Name(), Build())
		return ErrDone
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q: %s takes flags only (%s --help lists them)", fs.Args(), fs.Name(), fs.Name())
	}
	return nil
}

func usage(fs *flag.FlagSet, about string, w io.Writer) {
	fmt.Fprintf(w, "Usage: %s [flags]\n\n", fs.Name())
	if about = strings.TrimSpace(about); about != "" {
		fmt.Fprintf(w, "%s\n\n", about)
	}
	fmt.Fprintln(w, "Flags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// Exit ends the process with what the command's run returned: status 0
// for nil or ErrDone, otherwise the error on stderr and status 1.
func Exit(command string, err error) {
	os.Exit(exitCode(os.Stderr, command, err))
}

func exitCode(stderr io.Writer, command string, err error) int {
	if err == nil || errors.Is(err, ErrDone) {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", command, err)
	return 1
}
