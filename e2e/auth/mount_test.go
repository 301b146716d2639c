package auth_test

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"testing"
)

// TestMountOutOfAPrivateRepositoryStartsAnOrdinaryUpload: a user who may
// push somewhere but not pull path2 asks to mount a path2 layer there. The
// origin must answer as if the layer did not exist in a repository it may
// read (202 and a session), never 201 with the layer linked, which would
// hand it the layer.
func TestMountOutOfAPrivateRepositoryStartsAnOrdinaryUpload(t *testing.T) {
	e := setup(t)
	layer := e.private.layers[0]
	mount := func(repo string) string {
		return "/v2/" + repo + "/blobs/uploads/?" + url.Values{"mount": {layer.digest}, "from": {"path2/app"}}.Encode()
	}

	// Control: ci (pull on path2, push everywhere from pushAddr) mounts.
	ci := client{addr: e.origin.Addr, from: pushAddr}
	target := "scratch/" + uniqueName("ci")
	a := ci.do(t, http.MethodPost, mount(target), basic("ci"))
	if a.status != http.StatusCreated {
		t.Fatalf("control: ci's mount of a path2 layer into %s: %v\nwant 201: without working mounts the refusals below prove nothing", target, a)
	}

	for _, user := range []string{"bob", "mallory"} {
		t.Run(user, func(t *testing.T) {
			o := client{addr: e.origin.Addr}
			repo := "scratch/" + uniqueName(user)
			// With a password, and with a token for both scopes as a
			// Docker client asks when it mounts (the endpoint grants
			// nothing on path2).
			tok := e.token(t, user, "", "shoal", "repository:"+repo+":pull,push", "repository:path2/app:pull")
			for _, authz := range []string{basic(user), bearer(tok)} {
				a := o.do(t, http.MethodPost, mount(repo), authz)
				if a.status != http.StatusAccepted || a.header.Get("Location") == "" {
					t.Errorf("%v\nwant 202 Accepted with a Location: an ordinary upload", a)
				}
				assertNoLeak(t, a, e.private)
				if loc := a.header.Get("Location"); loc != "" {
					o.do(t, http.MethodDelete, loc, authz)
				}
				h := o.do(t, http.MethodHead, "/v2/"+repo+"/blobs/"+layer.digest, authz)
				if h.status != http.StatusNotFound {
					t.Errorf("after the refused mount: %v\nwant 404: the layer must not be in %s", h, repo)
				}
				assertNoLeak(t, h, e.private)
			}
		})
	}
}

// uniqueName is a repository name component no other test or run uses.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}
