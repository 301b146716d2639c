package auth

import "testing"

// FuzzValidNameIsTheGrammar: validName's fast path (ociapi.ValidName) and
// the regexp agree with the reference grammar alone.
func FuzzValidNameIsTheGrammar(f *testing.F) {
	for _, s := range []string{"a", "a/b", "a.b", "a__b", "a___b", "a--b", "a-_b", "A", "a//b", "a/../b", "localhost:5000/a", "Host/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := validName(name), len(name) <= 255 && nameRegexp.MatchString(name); got != want {
			t.Errorf("validName(%q) = %v, the reference grammar says %v", name, got, want)
		}
	})
}
