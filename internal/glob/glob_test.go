package glob

import (
	"path"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"**", "a", true},
		{"**", "a/b/c", true},
		{"*", "a", true},
		{"*", "a/b", false}, // * stays within a component
		{"team/*", "team/app", true},
		{"team/*", "team/app/sub", false},
		{"team/**", "team/app/sub", true},
		{"team/**", "team", true}, // ** may be no component at all
		{"team/**", "teamx/app", false},
		{"**/cache", "a/b/cache", true},
		{"**/cache", "cache", true},
		{"**/cache", "a/cache/b", false},
		{"a/**/z", "a/z", true},
		{"a/**/z", "a/b/c/z", true},
		{"a/**/z", "a/b/c/y", false},
		{"app-?", "app-1", true},
		{"app-[0-9]", "app-x", false},
		{"path1/**", "path2/x", false},
		{"path1/**", "path1", true},
		{"**/**", "a/b", true},
	} {
		if got := Match(c.pattern, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
		p, err := Compile(c.pattern)
		if err != nil {
			t.Fatalf("Compile(%q): %v", c.pattern, err)
		}
		if got := p.Match(c.name); got != c.want {
			t.Errorf("Compile(%q).Match(%q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

// splitMatch is the definition matchParts implements without allocating:
// both sides split into components, "**" taking any number of them.
func splitMatch(pattern, name []string) bool {
	if len(pattern) == 0 {
		return len(name) == 0
	}
	if pattern[0] == "**" {
		for i := 0; i <= len(name); i++ {
			if splitMatch(pattern[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	if len(name) == 0 {
		return false
	}
	ok, _ := path.Match(pattern[0], name[0])
	return ok && splitMatch(pattern[1:], name[1:])
}

func FuzzMatchIsTheSplitDefinition(f *testing.F) {
	for _, s := range [][2]string{{"**", "a/b"}, {"a/**/z", "a/b/z"}, {"team/*", "team/"}, {"**/x", ""}, {"a/[b", "a/b"}, {"/**", "/a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if strings.Count(pattern, "**") > 4 {
			return // the definition backtracks exponentially; the fold is tested by the table
		}
		want := splitMatch(strings.Split(pattern, "/"), strings.Split(name, "/"))
		if got := Match(pattern, name); got != want {
			t.Errorf("Match(%q, %q) = %v, the definition says %v", pattern, name, got, want)
		}
	})
}

func TestValidate(t *testing.T) {
	for _, p := range []string{"**", "team/*", "a/**/b", "app-[0-9]"} {
		if err := Validate(p); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"", "team/[", "a/\\"} {
		if err := Validate(p); err == nil {
			t.Errorf("Validate(%q) = nil, want an error", p)
		}
	}
}

func TestMalformedPatternMatchesNothing(t *testing.T) {
	if Match("team/[", "team/[") {
		t.Error("a malformed pattern matched; it must match nothing")
	}
}
