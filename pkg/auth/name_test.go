package auth

import (
	"regexp"
	"testing"
)

// pathGrammar is the path part of the distribution reference grammar, the
// definition pathComponents implements by hand.
var pathGrammar = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

func TestPathComponents(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "path2/app": true, "a.b_c__d--e-f/g": true, "a/b/c/d": true,
		"": false, "/a": false, "a/": false, "a//b": false, "A/b": false, "a/../b": false, "a/./b": false,
		"a___b": false, "a._b": false, "a-.b": false, "-a": false, "a-": false, "a..b": false, "a%2fb": false,
	} {
		if got := pathComponents(name); got != want {
			t.Errorf("pathComponents(%q) = %v, want %v", name, got, want)
		}
	}
}

func FuzzPathComponentsIsTheGrammar(f *testing.F) {
	for _, s := range []string{"a", "a/b", "a.b", "a__b", "a___b", "a--b", "a-_b", "A", "a//b", "a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := pathComponents(name), pathGrammar.MatchString(name); got != want {
			t.Errorf("pathComponents(%q) = %v, the grammar says %v", name, got, want)
		}
		if got, want := validName(name), len(name) <= 255 && nameRegexp.MatchString(name); got != want {
			t.Errorf("validName(%q) = %v, the reference grammar says %v", name, got, want)
		}
	})
}
