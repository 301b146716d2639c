package auth

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfigReadsTheDocumentedExample(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, `
htpasswd: /etc/shoal/htpasswd
groups: {builders: [ci, alice]}
trustedProxies: ["10.1.2.3/32", "10.9.9.9"]
rules:
  - repositories: ["path1/**"]
    subjects: [anonymous]
    actions: [pull]
  - repositories: ["**"]
    subjects: [group:builders]
    machines: ["cidr:10.0.0.0/24", "cert:build-1"]
    actions: [pull, push]
  - repositories: ["path2/**"]
    subjects: [user:mallory]
    actions: [pull]
    effect: deny
token:
  service: registry.example.com
  ttl: 10m
  issuers:
    - issuer: auth.example.com
      publicKey: /etc/shoal/issuer.pem
`))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := Config{
		Htpasswd:       "/etc/shoal/htpasswd",
		Groups:         map[string][]string{"builders": {"ci", "alice"}},
		TrustedProxies: []string{"10.1.2.3/32", "10.9.9.9"},
		Rules: []Rule{
			{Repositories: []string{"path1/**"}, Subjects: []string{"anonymous"}, Actions: []Action{Pull}},
			{Repositories: []string{"**"}, Subjects: []string{"group:builders"}, Machines: []string{"cidr:10.0.0.0/24", "cert:build-1"}, Actions: []Action{Pull, Push}},
			{Repositories: []string{"path2/**"}, Subjects: []string{"user:mallory"}, Actions: []Action{Pull}, Effect: "deny"},
		},
		Token: TokenConfig{
			Service:    "registry.example.com",
			Issuer:     "shoal",          // default kept
			TTL:        10 * time.Minute, // from the file
			RefreshTTL: 30 * 24 * time.Hour,
			Issuers:    []ExternalIssuer{{Issuer: "auth.example.com", PublicKey: "/etc/shoal/issuer.pem"}},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadConfig\n got %+v\nwant %+v", c, want)
	}
	if !c.Enabled() {
		t.Error("a config with rules is not Enabled")
	}
}

func TestLoadConfigRejectsUnknownKeysAndBadRules(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"htpasswd: x\nrule: []\n", "field rule not found"},
		{"rules:\n  - repositories: [a]\n    subjects: [anonymous]\n    actions: [pull]\n    efect: deny\n", "field efect not found"},
		{"rules:\n  - repositories: [a]\n    subjects: [anonymous]\n    actions: [pull]\n  - repositories: [a]\n    subjects: [nobody]\n    actions: [pull]\n", "rules[1]"},
		{"trustedProxies: [proxy.example.com]\n", "trustedProxies[0]"},
		{"token: {ttl: 10s}\n", "token.ttl 10s is below 1m"},
		{"token: {issuers: [{issuer: shoal, publicKey: k.pem}]}\n", "is the origin's own token.issuer"},
		{"token: {realm: auth.example.com/token}\n", "must be an http:// or https:// URL"},
	} {
		_, err := LoadConfig(writeConfig(t, c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadConfig(%q) = %v, want an error containing %q", c.yaml, err, c.want)
		}
	}
}

func TestEnabled(t *testing.T) {
	if (Config{}).Enabled() || DefaultConfig().Enabled() {
		t.Error("an empty config is Enabled; the origin must stay open without one")
	}
	if !(Config{Htpasswd: "/x"}).Enabled() {
		t.Error("a config with only users is not Enabled")
	}
	if !(Config{Token: TokenConfig{Issuers: []ExternalIssuer{{Issuer: "i", PublicKey: "k"}}}}).Enabled() {
		t.Error("a config with only an external issuer is not Enabled: its tokens would be moot on an open origin")
	}
}

func TestNewFillsZeroTokenSettings(t *testing.T) {
	// An `auth:` section in origin.yaml may decode over a zero Config.
	zero := Config{Rules: policyConfig().Rules[1:2]}
	if err := zero.Validate(); err != nil {
		t.Errorf("Validate of a config with zero token settings: %v", err)
	}
	a := newTestAuthorizer(t, zero, nil)
	if !reflect.DeepEqual(a.cfg.Token, DefaultConfig().Token) {
		t.Errorf("token settings %+v, want the defaults %+v", a.cfg.Token, DefaultConfig().Token)
	}
}
