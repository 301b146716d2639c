package auth_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// token asks the origin's token endpoint, from the local address from
// ("" for the default), for scope as user ("" for anonymous) and returns
// the token, failing the test unless the endpoint answers 200.
func (e *env) token(t *testing.T, user, from, service string, scopes ...string) string {
	t.Helper()
	return tokenOf(t, e.tokenAnswer(t, user, from, service, scopes...))
}

// tokenOf reads the token out of a token endpoint's answer.
func tokenOf(t *testing.T, a answer) string {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("token endpoint: %v", a)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(a.body, &body); err != nil {
		t.Fatalf("token endpoint: %v\n%v", a, err)
	}
	if body.Token == "" {
		body.Token = body.AccessToken
	}
	if body.Token == "" {
		t.Fatalf("token endpoint answered no token: %v", a)
	}
	return body.Token
}

func (e *env) tokenAnswer(t *testing.T, user, from, service string, scopes ...string) answer {
	t.Helper()
	q := url.Values{"service": {service}}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	authz := ""
	if user != "" {
		authz = basic(user)
	}
	return client{addr: e.origin.Addr, from: from}.do(t, http.MethodGet, "/auth/token?"+q.Encode(), authz)
}

// jwt is a decoded token, its header and claims kept as the issuer wrote
// them (numbers as json.Number) so that a re-encoding changes only what a
// test changes.
type jwt struct {
	header, claims map[string]any
	signature      string // as received, base64url
}

func parseJWT(t *testing.T, raw string) jwt {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", raw)
	}
	j := jwt{signature: parts[2]}
	for i, dst := range []*map[string]any{&j.header, &j.claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("token part %d: %v", i, err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(dst); err != nil {
			t.Fatalf("token part %d: %v", i, err)
		}
	}
	return j
}

// clone returns a deep copy, to change one thing in.
func (j jwt) clone(t *testing.T) jwt {
	t.Helper()
	return parseJWT(t, j.unsigned(t)+"."+j.signature)
}

// unsigned is the JWS signing input, header.claims.
func (j jwt) unsigned(t *testing.T) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(j.header) + "." + enc(j.claims)
}

// signEd25519 signs with an Ed25519 key, as the origin does.
func (j jwt) signEd25519(t *testing.T, priv ed25519.PrivateKey) string {
	in := j.unsigned(t)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(in)))
}

// signHMAC signs with HS256 and secret: the key-confusion attack on a
// verifier that takes the algorithm from the token and its public key as
// an HMAC secret.
func (j jwt) signHMAC(t *testing.T, secret []byte) string {
	j.header["alg"] = "HS256"
	in := j.unsigned(t)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// access is a token's access claim as a registry reads it.
func (j jwt) access(t *testing.T) map[string][]string {
	t.Helper()
	b, err := json.Marshal(j.claims["access"])
	if err != nil {
		t.Fatal(err)
	}
	var list []struct {
		Type, Name string
		Actions    []string
	}
	_ = json.Unmarshal(b, &list)
	out := map[string][]string{}
	for _, a := range list {
		out[a.Type+":"+a.Name] = append(out[a.Type+":"+a.Name], a.Actions...)
	}
	return out
}

func TestTokensThatDoNotGrantTheRequestAreRefused(t *testing.T) {
	e := setup(t)
	o := client{addr: e.origin.Addr}
	const manifest = "/v2/path2/app/manifests/v1"
	pullScope := challenge{scope: "repository:path2/app:pull"}

	raw := e.token(t, "alice", "", "shoal", "repository:path2/app:pull")
	alice := parseJWT(t, raw)
	// Controls: alice's token reads path2/app, and so does the test's own
	// re-signing of it with the origin's key (planted at setup): the
	// forgeries below differ from an accepted token only in what each
	// case changes.
	if a := o.do(t, http.MethodGet, manifest, bearer(raw)); a.status != http.StatusOK || !bytes.Equal(a.body, e.private.manifest) {
		t.Fatalf("control: alice's token on her own scope: %v", a)
	}
	if a := o.do(t, http.MethodGet, manifest, bearer(alice.clone(t).signEd25519(t, e.key.Private()))); a.status != http.StatusOK {
		t.Fatalf("control: alice's token re-signed by the test with the origin's key (planted at %s) is not accepted, "+
			"so the forgeries below prove nothing: %v", auth.KeyPath, a)
	}

	t.Run("for another repository", func(t *testing.T) {
		a := o.do(t, http.MethodGet, "/v2/path2/other/manifests/v1", bearer(raw))
		assertUnauthorized(t, a, e.origin.Addr, challenge{scope: "repository:path2/other:pull", insufficient: true})
		assertNoLeak(t, a, e.other)
		anon := e.token(t, "", "", "shoal", "repository:path1/app:pull")
		if a := o.do(t, http.MethodGet, "/v2/path1/app/manifests/v1", bearer(anon)); a.status != http.StatusOK {
			t.Fatalf("control: an anonymous token for path1/app does not read it: %v", a)
		}
		a = o.do(t, http.MethodGet, manifest, bearer(anon))
		assertUnauthorized(t, a, e.origin.Addr, challenge{scope: "repository:path2/app:pull", insufficient: true})
		assertNoLeak(t, a, e.private)
	})

	t.Run("asked for anonymously or by a user the rules keep out", func(t *testing.T) {
		for _, user := range []string{"", "bob", "mallory"} {
			a := e.tokenAnswer(t, user, "", "shoal", "repository:path2/app:pull")
			if a.status != http.StatusOK {
				// Refusing the token outright is as good as an empty grant.
				t.Logf("%q asking for a path2/app token: %v", user, a)
				continue
			}
			tok := tokenOf(t, a)
			if got := parseJWT(t, tok).access(t)["repository:path2/app"]; len(got) != 0 {
				t.Errorf("the token endpoint granted %q %v on path2/app", user, got)
			}
			a = o.do(t, http.MethodGet, manifest, bearer(tok))
			assertUnauthorized(t, a, e.origin.Addr, challenge{scope: "repository:path2/app:pull", insufficient: true})
			assertNoLeak(t, a, e.private)
		}
	})

	t.Run("for another action", func(t *testing.T) {
		upload := "/v2/path2/app/blobs/uploads/"
		pushScope := challenge{scope: "repository:path2/app:pull,push", insufficient: true}
		// ci may push from pushAddr, but this token asked only for pull.
		ciPull := e.token(t, "ci", pushAddr, "shoal", "repository:path2/app:pull")
		ci := client{addr: e.origin.Addr, from: pushAddr}
		a := ci.do(t, http.MethodPost, upload, bearer(ciPull))
		assertUnauthorized(t, a, e.origin.Addr, pushScope)
		if loc := a.header.Get("Location"); loc != "" {
			t.Errorf("the refused upload names a session %q", loc)
		}
		a = o.do(t, http.MethodPost, upload, bearer(raw))
		assertUnauthorized(t, a, e.origin.Addr, pushScope)
		// Control: the same user and machine with a push token starts one.
		ciPush := e.token(t, "ci", pushAddr, "shoal", "repository:path2/app:pull,push")
		a = ci.do(t, http.MethodPost, upload, bearer(ciPush))
		if a.status != http.StatusAccepted || a.header.Get("Location") == "" {
			t.Fatalf("control: ci's push token from %s does not start an upload: %v", pushAddr, a)
		}
		ci.do(t, http.MethodDelete, a.header.Get("Location"), bearer(ciPush))
	})

	t.Run("for another service", func(t *testing.T) {
		a := e.tokenAnswer(t, "alice", "", "another-registry", "repository:path2/app:pull")
		if a.status == http.StatusOK {
			tok := tokenOf(t, a)
			if aud := parseJWT(t, tok).claims["aud"]; aud != "shoal" {
				a := o.do(t, http.MethodGet, manifest, bearer(tok))
				assertUnauthorized(t, a, e.origin.Addr, pullScope)
				assertNoLeak(t, a, e.private)
			}
		}
		forged := alice.clone(t)
		forged.claims["aud"] = "another-registry"
		a = o.do(t, http.MethodGet, manifest, bearer(forged.signEd25519(t, e.key.Private())))
		assertUnauthorized(t, a, e.origin.Addr, pullScope)
		assertNoLeak(t, a, e.private)
	})

	t.Run("expired", func(t *testing.T) {
		forged := alice.clone(t)
		now := time.Now()
		forged.claims["exp"] = now.Add(-10 * time.Minute).Unix()
		forged.claims["iat"] = now.Add(-20 * time.Minute).Unix()
		if _, ok := forged.claims["nbf"]; ok {
			forged.claims["nbf"] = now.Add(-20 * time.Minute).Unix()
		}
		a := o.do(t, http.MethodGet, manifest, bearer(forged.signEd25519(t, e.key.Private())))
		assertUnauthorized(t, a, e.origin.Addr, pullScope)
		assertNoLeak(t, a, e.private)
	})

	t.Run("signed by another key", func(t *testing.T) {
		_, other, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		a := o.do(t, http.MethodGet, manifest, bearer(alice.clone(t).signEd25519(t, other)))
		assertUnauthorized(t, a, e.origin.Addr, pullScope)
		assertNoLeak(t, a, e.private)
	})

	t.Run("claims changed after signing", func(t *testing.T) {
		forged := alice.clone(t)
		forged.claims["access"] = []map[string]any{{"type": "repository", "name": "path2/other", "actions": []string{"pull", "push"}}}
		tampered := forged.unsigned(t) + "." + alice.signature
		a := o.do(t, http.MethodGet, "/v2/path2/other/manifests/v1", bearer(tampered))
		assertUnauthorized(t, a, e.origin.Addr, challenge{scope: "repository:path2/other:pull"})
		assertNoLeak(t, a, e.other)
	})

	t.Run("alg none", func(t *testing.T) {
		for _, alg := range []string{"none", "None", "NONE"} {
			forged := alice.clone(t)
			forged.header["alg"] = alg
			a := o.do(t, http.MethodGet, manifest, bearer(forged.unsigned(t)+"."))
			assertUnauthorized(t, a, e.origin.Addr, pullScope)
			assertNoLeak(t, a, e.private)
		}
	})

	t.Run("HS256 keyed with the public key", func(t *testing.T) {
		pub := e.key.Public().Key
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		for _, secret := range [][]byte{pub, der, pemKey, []byte(base64.StdEncoding.EncodeToString(pub))} {
			a := o.do(t, http.MethodGet, manifest, bearer(alice.clone(t).signHMAC(t, secret)))
			assertUnauthorized(t, a, e.origin.Addr, pullScope)
			assertNoLeak(t, a, e.private)
		}
	})

	t.Run("through the agent", func(t *testing.T) {
		// The agent passes tokens to the origin; a forged one must fare
		// there as it does at the origin.
		ag := client{addr: e.agent.Addr}
		expired := alice.clone(t)
		expired.claims["exp"] = time.Now().Add(-10 * time.Minute).Unix()
		other := e.token(t, "alice", "", "shoal", "repository:path2/other:pull")
		for _, tc := range []struct{ name, tok string }{
			{"an expired token", expired.signEd25519(t, e.key.Private())},
			{"an HS256 token keyed with the public key", alice.clone(t).signHMAC(t, e.key.Public().Key)},
			{"alice's token for path2/other", other},
		} {
			for _, target := range []string{manifest, "/v2/path2/app/manifests/" + e.private.digest, "/v2/path2/app/blobs/" + e.private.layers[0].digest} {
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					a := ag.do(t, method, target, bearer(tc.tok))
					assertRefused(t, a)
					assertNoLeak(t, a, e.private)
					assertAnswersAsOrigin(t, o, tc.name, a)
				}
			}
		}
	})
}

// grants reports whether a token's access claim holds action on repo.
func grants(t *testing.T, tok, repo, action string) bool {
	return slices.Contains(parseJWT(t, tok).access(t)["repository:"+repo], action)
}
