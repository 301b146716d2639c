package objectstore

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// signing is a driver whose store signs every URL.
type signing struct{ *inmemory.Driver }

func (signing) RedirectURL(r *http.Request, p string) (string, error) {
	return "https://store.example" + p + "?signature=x", nil
}

// TestRedirectURLOnlyForGETWhenOn: the store's signed URL is handed out
// only with Options.Redirect, and only for a GET; a HEAD stays with the
// origin, which alone gives the digest and the P2P capability.
func TestRedirectURLOnlyForGETWhenOn(t *testing.T) {
	for _, tc := range []struct {
		redirect bool
		method   string
		want     string
	}{
		{false, http.MethodGet, ""},
		{false, http.MethodHead, ""},
		{true, http.MethodHead, ""},
		{true, http.MethodGet, "https://store.example/blobs/data?signature=x"},
	} {
		d := Wrap(signing{inmemory.New()}, Options{Name: "test", Redirect: tc.redirect})
		got, err := d.RedirectURL(httptest.NewRequest(tc.method, "/v2/a/blobs/sha256:x", nil), "/blobs/data")
		if err != nil || got != tc.want {
			t.Errorf("Redirect %v, %s: RedirectURL = %q, %v; want %q", tc.redirect, tc.method, got, err, tc.want)
		}
	}
	d := Wrap(signing{inmemory.New()}, Options{Name: "test", Redirect: true})
	if _, err := d.RedirectURL(httptest.NewRequest(http.MethodGet, "/", nil), "/a/../b"); err == nil {
		t.Error("RedirectURL signed a path with ..")
	}
}
