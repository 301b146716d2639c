package daemon

import (
	"bytes"
	"errors"
	"flag"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseAnswersHelpOnStdoutAndSucceeds(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		t.Run(arg, func(t *testing.T) {
			fs := flag.NewFlagSet("origin", flag.ContinueOnError)
			fs.String("listen", "", "address to serve on")
			var out bytes.Buffer
			err := Parse(fs, "Serves the registry API.", []string{arg}, &out)
			if !errors.Is(err, ErrDone) {
				t.Fatalf("Parse(%s) = %v, want ErrDone (exit 0)", arg, err)
			}
			got := out.String()
			for _, want := range []string{"Usage: origin [flags]", "Serves the registry API.", "-listen", "address to serve on", "-version"} {
				if !strings.Contains(got, want) {
					t.Errorf("--help output lacks %q:\n%s", want, got)
				}
			}
			if code := exitCode(&out, "origin", err); code != 0 {
				t.Errorf("exit status after %s = %d, want 0", arg, code)
			}
		})
	}
}

func TestParseAnswersVersion(t *testing.T) {
	fs := flag.NewFlagSet("tracker", flag.ContinueOnError)
	var out bytes.Buffer
	if err := Parse(fs, "", []string{"--version"}, &out); !errors.Is(err, ErrDone) {
		t.Fatalf("Parse(--version) = %v, want ErrDone", err)
	}
	if want := "tracker " + Build().String() + "\n"; out.String() != want {
		t.Fatalf("--version printed %q, want %q", out.String(), want)
	}
}

func TestParseErrorsNameTheHelpFlag(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--nope"}, "flag provided but not defined: -nope (origin --help lists the flags)"},
		{[]string{"--listen", "x", "extra"}, `unexpected arguments ["extra"]`},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("origin", flag.ContinueOnError)
		fs.String("listen", "", "")
		var out bytes.Buffer
		err := Parse(fs, "", tt.args, &out)
		if err == nil || errors.Is(err, ErrDone) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
		if out.Len() != 0 {
			t.Errorf("Parse(%q) wrote %q to stdout; errors belong to the caller", tt.args, out.String())
		}
		var stderr bytes.Buffer
		if code := exitCode(&stderr, "origin", err); code != 1 || !strings.HasPrefix(stderr.String(), "origin: ") {
			t.Errorf("exit after %q: status %d, stderr %q; want 1 and the error prefixed with the command", tt.args, code, stderr.String())
		}
	}
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	listen := fs.String("listen", "", "")
	if err := Parse(fs, "", []string{"--listen", ":5000"}, &bytes.Buffer{}); err != nil || *listen != ":5000" {
		t.Fatalf("Parse of a good flag: err %v, listen %q", err, *listen)
	}
}

func TestBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/shoal-dev/shoal", Version: "v0.0.0-20261203100000-3b58005c1e2f+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "3b58005c1e2f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"},
			{Key: "vcs.time", Value: "2026-12-03T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	tests := []struct {
		name             string
		info             *debug.BuildInfo
		ldVersion, ldRev string
		want             BuildInfo
	}{
		{"go run: nothing recorded", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "",
			BuildInfo{Version: "devel", Go: "go1.26.8"}},
		{"go build in a checkout", stamped, "", "",
			BuildInfo{Version: "v0.0.0-20261203100000-3b58005c1e2f+dirty", Commit: "3b58005c1e2f9a0b1c2d3e4f5a6b7c8d9e0f1a2b", Time: "2026-12-03T10:00:00Z", Modified: true, Go: "go1.26.8"}},
		{"linker overrides", stamped, "v1.2.0", "abcdef",
			BuildInfo{Version: "v1.2.0", Commit: "abcdef", Go: "go1.26.8"}},
		{"linker version only keeps the recorded commit", stamped, "v1.2.0", "",
			BuildInfo{Version: "v1.2.0", Commit: "3b58005c1e2f9a0b1c2d3e4f5a6b7c8d9e0f1a2b", Time: "2026-12-03T10:00:00Z", Modified: true, Go: "go1.26.8"}},
	}
	for _, tt := range tests {
		if got := buildInfo(tt.info, tt.ldVersion, tt.ldRev); got != tt.want {
			t.Errorf("%s: buildInfo = %+v, want %+v", tt.name, got, tt.want)
		}
	}
	s := buildInfo(stamped, "", "").String()
	if !strings.HasPrefix(s, "v0.0.0-20261203100000-3b58005c1e2f+dirty (commit 3b58005c1e2f, 2026-12-03T10:00:00Z, modified) go1.26.8 ") {
		t.Errorf("String() = %q", s)
	}
}
