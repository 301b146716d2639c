package ociapi

import (
	"regexp"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// The grammar as the distribution spec writes it: ValidName and ValidTag
// must agree with these on every input (FuzzValidName, FuzzValidTag).
var (
	specName = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	specTag  = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)
)

func specValidName(name string) bool { return len(name) <= MaxNameLength && specName.MatchString(name) }

var nameSeeds = []string{
	"", "a", "library/ubuntu", "path1/team-a/app_1", "a.b/c__d", "a---b", "a/b/c/d/e",
	"A", "a//b", "/a", "a/", "a/../b", "a/_layers", "a:b", "a_", "-a", "a.", "a..b", "a___b", "a_.b", "a._b",
	"a-_b", "a/-b", "a/b-", "a/_layers", "host:5000/app", "a b", "a\x00", "é", strings.Repeat("a", 255), strings.Repeat("a", 256),
	strings.Repeat("a/", 127) + "a", strings.Repeat("a/", 128) + "a",
}

var tagSeeds = []string{
	"", "latest", "v1.0", "_x", "0", "A-b_c.d", ".hidden", "-tag", "ta!g", "sha256:abc", "a/b", "é",
	strings.Repeat("t", 128), strings.Repeat("t", 129),
}

func TestValidNameAgreesWithTheGrammar(t *testing.T) {
	for _, n := range nameSeeds {
		if got, want := ValidName(n), specValidName(n); got != want {
			t.Errorf("ValidName(%q) = %v, the spec's grammar says %v", n, got, want)
		}
	}
}

func TestValidTagAgreesWithTheGrammar(t *testing.T) {
	for _, tag := range tagSeeds {
		if got, want := ValidTag(tag), specTag.MatchString(tag); got != want {
			t.Errorf("ValidTag(%q) = %v, the spec's grammar says %v", tag, got, want)
		}
	}
}

func FuzzValidName(f *testing.F) {
	for _, n := range nameSeeds {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := ValidName(name), specValidName(name); got != want {
			t.Fatalf("ValidName(%q) = %v, the spec's grammar says %v", name, got, want)
		}
	})
}

func FuzzValidTag(f *testing.F) {
	for _, tag := range tagSeeds {
		f.Add(tag)
	}
	f.Fuzz(func(t *testing.T, tag string) {
		if got, want := ValidTag(tag), specTag.MatchString(tag); got != want {
			t.Fatalf("ValidTag(%q) = %v, the spec's grammar says %v", tag, got, want)
		}
	})
}
