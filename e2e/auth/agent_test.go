package auth_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestTheAgentServesWhatAliceCachedOnlyToThoseTheOriginLetIn: alice pulls
// a path2 image through the agent, so its manifest and blobs are on that
// host. Others then ask the agent for the same content, with the origin up
// (the agent must answer as the origin does) and with the origin killed
// (the agent cannot ask, and must not fall back to serving what it holds
// to anyone but alice). Nor may the private blob be read under the name
// of the public repository, which the agent also holds and anonymous may
// read. alice's tokens count as hers while the origin is down: one she
// fetched before it died and never showed the agent is served what her
// earlier token pulled.
func TestTheAgentServesWhatAliceCachedOnlyToThoseTheOriginLetIn(t *testing.T) {
	e := setup(t)
	p := e.private
	ag := client{addr: e.agent.Addr}
	o := client{addr: e.origin.Addr}
	private := map[string][]byte{
		"/v2/path2/app/manifests/v1":                       p.manifest,
		"/v2/path2/app/manifests/" + p.digest:              p.manifest,
		"/v2/path2/app/blobs/" + p.config.digest:           p.config.data,
		"/v2/path2/app/blobs/" + p.layers[0].digest:        p.layers[0].data,
		"/v2/path2/app/blobs/" + p.layers[1].digest:        p.layers[1].data,
		"/v2/path1/app/manifests/v1":                       e.public.manifest,
		"/v2/path1/app/blobs/" + e.public.layers[0].digest: e.public.layers[0].data,
	}
	// The private image's content asked for under the public name.
	crossed := []string{
		"/v2/path1/app/manifests/" + p.digest,
		"/v2/path1/app/blobs/" + p.config.digest,
		"/v2/path1/app/blobs/" + p.layers[0].digest,
	}
	// alice pulls the private image (with aliceAuthz), anonymous the
	// public one: the agent holds both and has seen the origin say yes to
	// each.
	pull := func(t *testing.T, what, aliceAuthz string) {
		t.Helper()
		for target, want := range private {
			authz := ""
			if strings.HasPrefix(target, "/v2/path2/") {
				authz = aliceAuthz
			}
			if a := ag.do(t, http.MethodGet, target, authz); a.status != http.StatusOK || !bytes.Equal(a.body, want) {
				t.Fatalf("%s: %v\nwant 200 and the %d bytes pushed", what, a, len(want))
			}
		}
	}
	pull(t, "control: alice's and anonymous's pulls through the agent", basic("alice"))

	bobToken := e.token(t, "bob", "", "shoal", "repository:path2/app:pull")
	intruders := []struct{ who, authz string }{
		{"anonymous", ""},
		{"bob", basic("bob")},
		{"mallory", basic("mallory")},
		{"alice with a wrong password", basicWith("alice", "not-her-password")},
		{"bob's token", bearer(bobToken)},
	}
	// attempt sends every intruder's GET and HEAD of the private image,
	// and anonymous's of it under the public name, to the agent: each
	// must be refused and leak nothing; check adds what else to expect.
	attempt := func(t *testing.T, check func(who string, a answer)) {
		t.Helper()
		for _, in := range intruders {
			for target := range private {
				if !strings.HasPrefix(target, "/v2/path2/") {
					continue
				}
				for _, m := range []string{http.MethodGet, http.MethodHead} {
					a := ag.do(t, m, target, in.authz)
					assertRefused(t, a)
					assertNoLeak(t, a, p)
					check(in.who, a)
				}
			}
		}
		for _, target := range crossed {
			for _, m := range []string{http.MethodGet, http.MethodHead} {
				a := ag.do(t, m, target, "")
				assertRefused(t, a)
				assertNoLeak(t, a, p)
			}
		}
	}

	t.Run("origin up", func(t *testing.T) {
		attempt(t, func(who string, a answer) { assertAnswersAsOrigin(t, o, who, a) })
	})
	// Two tokens of alice's from the origin: she pulls with the first; the
	// second the agent sees only once the origin is dead.
	aliceScope := "repository:path2/app:pull"
	shown, unseen := e.token(t, "alice", "", "shoal", aliceScope), e.token(t, "alice", "", "shoal", aliceScope)
	pull(t, "alice's pull with a token", bearer(shown))

	e.origin.Kill()
	t.Logf("killed the origin (pid %d)", e.origin.PID())
	defer func() {
		if err := e.origin.Restart(t.Context()); err != nil {
			t.Fatalf("restarting the origin for the tests that follow: %v", err)
		}
	}()

	t.Run("origin down", func(t *testing.T) {
		// Control: the offline rule serves alice (and anonymous the public
		// image) what the origin let them read, so the refusals below are
		// the rule's, not a dead agent's.
		pull(t, "control: alice's and anonymous's pulls with the origin down", basic("alice"))
		pull(t, "alice's pull with the token she pulled with, the origin down", bearer(shown))
		pull(t, "alice's pull with a token of hers the agent never saw, the origin down", bearer(unseen))
		attempt(t, func(who string, a answer) {
			if a.method == http.MethodGet && a.ociCode() == "" {
				t.Errorf("%s: %v\nwant an OCI error body", who, a)
			}
		})
	})
}
