package testenv

import (
	"testing"
)

func TestUnescapeMountUndoesMountinfoOctalEscapes(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/plain`:              "/tmp/plain",
		`/tmp/with\040space`:      "/tmp/with space",
		`/tmp/tab\011and\134back`: "/tmp/tab\tand\\back",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
