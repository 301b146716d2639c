package cluster

import (
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/shoal-dev/shoal/internal/peerwire"
)

// TestSeederAddrs: members without a seeder are left out; an unspecified
// host is filled with the address the request came in on for this node
// only, since only its own address is known to be the one the agent
// reached.
func TestSeederAddrs(t *testing.T) {
	members := []Member{
		{Name: "a", Addr: "10.0.0.5:7003"},
		{Name: "b"},
		{Name: "c", Addr: "0.0.0.0:7003"},
		{Name: "self", Addr: "[::]:7003"},
	}
	got := seederAddrs(members, "self", net.ParseIP("10.0.0.9"))
	if want := []string{"10.0.0.5:7003", "10.0.0.9:7003"}; !slices.Equal(got, want) {
		t.Errorf("seederAddrs = %v, want %v", got, want)
	}
	if got := seederAddrs(members, "self", nil); !slices.Equal(got, []string{"10.0.0.5:7003"}) {
		t.Errorf("seederAddrs without the local address = %v, want only a's", got)
	}
}

// TestAdvertiseSeedersOnV2: a live cluster's registry API lists its members'
// seeders on /v2/, whatever the registry answers, and only there.
func TestAdvertiseSeedersOnV2(t *testing.T) {
	_, b, _ := twoNodes(t)
	denied := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	srv := httptest.NewServer(b.AdvertiseSeeders(denied))
	defer srv.Close()
	for path, want := range map[string]string{"/v2/": "127.0.0.1:7101,127.0.0.1:7102", "/v2/app/tags/list": ""} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get(peerwire.SeedersHeader); got != want || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s: %d with %s %q, want 401 with %q", path, resp.StatusCode, peerwire.SeedersHeader, got, want)
		}
	}
}
