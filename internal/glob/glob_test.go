package glob

import "testing"

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
	}
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
