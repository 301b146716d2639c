package auth_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestOnlyTheBuildMachinePushes: user ci may push only from pushAddr
// (127.0.0.2, rule machines: cidr). From 127.0.0.1 the same user, password
// and request are refused, and so is a push token ci got on the build
// machine and carried elsewhere; from 127.0.0.2 they succeed.
func TestOnlyTheBuildMachinePushes(t *testing.T) {
	e := setup(t)
	repo := "path2/" + uniqueName("machine")
	upload := "/v2/" + repo + "/blobs/uploads/"
	build := client{addr: e.origin.Addr, from: pushAddr}
	elsewhere := client{addr: e.origin.Addr, from: "127.0.0.1"}

	// Control: from the build machine.
	a := build.do(t, http.MethodPost, upload, basic("ci"))
	if a.status != http.StatusAccepted {
		t.Fatalf("control: ci's upload from %s: %v", pushAddr, a)
	}
	build.do(t, http.MethodDelete, a.header.Get("Location"), basic("ci"))

	assertForbidden(t, elsewhere.do(t, http.MethodPost, upload, basic("ci")))

	// A token asked for from elsewhere grants no push.
	tok := e.token(t, "ci", "127.0.0.1", "shoal", "repository:"+repo+":pull,push")
	if grants(t, tok, repo, "push") {
		t.Errorf("the token endpoint granted ci push on %s to a request from 127.0.0.1", repo)
	}
	assertUnauthorized(t, elsewhere.do(t, http.MethodPost, upload, bearer(tok)), e.origin.Addr,
		challenge{scope: "repository:" + repo + ":pull,push", insufficient: true})

	// A push token from the build machine, carried elsewhere: the rules
	// are decided again for the request's own address.
	buildTok := e.token(t, "ci", pushAddr, "shoal", "repository:"+repo+":pull,push")
	if !grants(t, buildTok, repo, "push") {
		t.Fatalf("control: the token endpoint did not grant ci push on %s from %s", repo, pushAddr)
	}
	a = elsewhere.do(t, http.MethodPost, upload, bearer(buildTok))
	assertRefused(t, a)
	if a.header.Get("Location") != "" {
		t.Errorf("%v\nthe refused upload names a session", a)
	}

	// A whole push with a registry client, as CI would run it.
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(e.origin.Addr+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	if err := remote.Write(ref, img, pushOptions(ctx, "ci", "127.0.0.1")...); err == nil {
		t.Errorf("go-containerregistry pushed %s as ci from 127.0.0.1", ref)
	}
	if err := remote.Write(ref, img, pushOptions(ctx, "ci", pushAddr)...); err != nil {
		t.Errorf("control: go-containerregistry's push of %s as ci from %s: %v", ref, pushAddr, err)
	}
}
