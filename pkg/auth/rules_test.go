package auth

import (
	"net/netip"
	"strings"
	"testing"
)

// policyConfig is the mission's policy plus every kind of subject: path1
// public, path2 for anyone with credentials but mallory, pushes only by
// builders from build machines.
func policyConfig() Config {
	c := DefaultConfig()
	c.Groups = map[string][]string{"builders": {"ci", "alice"}, "ops": {"olga"}}
	c.Rules = []Rule{
		/* 0 */ {Repositories: []string{"path2/**"}, Subjects: []string{"user:mallory"}, Actions: []Action{Pull}, Effect: "deny"},
		/* 1 */ {Repositories: []string{"path1/**"}, Subjects: []string{"anonymous"}, Actions: []Action{Pull}},
		/* 2 */ {Repositories: []string{"path2/**"}, Subjects: []string{"authenticated"}, Actions: []Action{Pull}},
		/* 3 */ {Repositories: []string{"**"}, Subjects: []string{"group:builders"}, Machines: []string{"cidr:10.0.0.0/24", "cert:build-1"}, Actions: []Action{Pull, Push}},
		/* 4 */ {Repositories: []string{"team-*/**"}, Subjects: []string{"cidr:192.168.1.0/24"}, Actions: []Action{Pull}},
		/* 5 */ {Repositories: []string{"secure/**"}, Subjects: []string{"cert:scanner.example.com"}, Actions: []Action{Pull}},
		/* 6 */ {Repositories: []string{"*"}, Subjects: []string{"group:ops"}, Actions: []Action{Admin, Delete}},
		/* 7 */ {Repositories: []string{"carol/**"}, Subjects: []string{"user:carol"}, Actions: []Action{Push}},
		/* 8 */ {Repositories: []string{"carol/**"}, Subjects: []string{"authenticated"}, Actions: []Action{Push}, Effect: "deny"},
		/* 9 */ {Repositories: []string{"carol/**"}, Subjects: []string{"anonymous"}, Actions: []Action{Push}},
	}
	return c
}

func TestDecidePolicyTable(t *testing.T) {
	a := newTestAuthorizer(t, policyConfig(), nil)
	build := netip.MustParseAddr("10.0.0.5")
	office := netip.MustParseAddr("10.0.1.5")
	lab := netip.MustParseAddr("192.168.1.7")
	for _, c := range []struct {
		name   string
		s      Subject
		repo   string
		action Action
		allow  bool
		rule   int // -1: no rule matched
	}{
		{"anonymous pulls public path", Subject{Addr: office}, "path1/app", Pull, true, 1},
		{"** crosses components", Subject{Addr: office}, "path1/deep/er/app", Pull, true, 1},
		{"anonymous may not push to the public path", Subject{Addr: office}, "path1/app", Push, false, -1},
		{"anonymous may not pull the private path", Subject{Addr: office}, "path2/app", Pull, false, -1},
		{"any authenticated user pulls the private path", Subject{User: "bob", Addr: office}, "path2/app", Pull, true, 2},
		{"an earlier deny beats a later allow", Subject{User: "mallory", Addr: office}, "path2/app", Pull, false, 0},
		{"anonymous means anyone, mallory too", Subject{User: "mallory", Addr: office}, "path1/app", Pull, true, 1},
		{"builder pushes from a build address", Subject{User: "alice", Addr: build}, "path1/app", Push, true, 3},
		{"builder pushes anywhere from a build address", Subject{User: "ci", Addr: build}, "other/app", Push, true, 3},
		{"builder may not push from the office", Subject{User: "alice", Addr: office}, "path1/app", Push, false, -1},
		{"builder pushes with the build certificate", Subject{User: "alice", Addr: office, CertNames: []string{"build-1"}}, "x", Push, true, 3},
		{"another certificate is no build machine", Subject{User: "ci", Addr: office, CertNames: []string{"build-2"}}, "x", Push, false, -1},
		{"a non-builder on a build machine", Subject{User: "bob", Addr: build}, "path1/app", Push, false, -1},
		{"anonymous on a build machine", Subject{Addr: build}, "path1/app", Push, false, -1},
		{"an IPv4-mapped address is the IPv4 address", Subject{User: "alice", Addr: netip.MustParseAddr("::ffff:10.0.0.9")}, "x", Push, true, 3},
		{"cidr subject", Subject{Addr: lab}, "team-a/app", Pull, true, 4},
		{"cidr subject from elsewhere", Subject{Addr: netip.MustParseAddr("192.168.2.7")}, "team-a/app", Pull, false, -1},
		{"* does not match the bare prefix", Subject{Addr: lab}, "team/app", Pull, false, -1},
		{"cert subject", Subject{CertNames: []string{"node-9", "scanner.example.com"}}, "secure/x", Pull, true, 5},
		{"cert subject, other name", Subject{CertNames: []string{"scanner.example.org"}}, "secure/x", Pull, false, -1},
		{"group admin on the admin API", Subject{User: "olga"}, AdminRepository, Admin, true, 6},
		{"non-member admin", Subject{User: "alice", Addr: build}, AdminRepository, Admin, false, -1},
		{"* is one component: delete at top level", Subject{User: "olga"}, "app", Delete, true, 6},
		{"* is one component: not below", Subject{User: "olga"}, "team/app", Delete, false, -1},
		{"an earlier allow beats a later deny", Subject{User: "carol"}, "carol/app", Push, true, 7},
		{"the later deny applies to the others", Subject{User: "dave"}, "carol/app", Push, false, 8},
		{"authenticated is not anonymous: anonymous reaches the next rule", Subject{}, "carol/app", Push, true, 9},
		{"dot segments are no repository name", Subject{}, "path1/../path2/app", Pull, false, -1},
		{"upper case is no repository name", Subject{User: "bob"}, "PATH2/app", Pull, false, -1},
		{"doubled slashes are no repository name", Subject{}, "path1//app", Pull, false, -1},
		{"percent-encoding is no repository name", Subject{}, "path1/%2e%2e/path2", Pull, false, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := a.Decide(c.s, c.repo, c.action)
			if d.Allowed != c.allow || d.Rule != c.rule {
				t.Fatalf("%s on %s by %+v: allowed=%v rule=%d (%s), want allowed=%v rule=%d", c.action, c.repo, c.s, d.Allowed, d.Rule, d.Reason(), c.allow, c.rule)
			}
			switch {
			case d.Rule >= 0 && !strings.Contains(d.Reason(), "rule "+itoa(d.Rule)+" ("):
				t.Errorf("reason %q does not name rule %d", d.Reason(), d.Rule)
			case d.Rule < 0 && !strings.Contains(d.Reason(), "denied"):
				t.Errorf("reason %q does not say the request is denied", d.Reason())
			}
		})
	}
}

func TestDecideReasonReadsAsASentence(t *testing.T) {
	a := newTestAuthorizer(t, policyConfig(), nil)
	d := a.Check("alice", netip.MustParseAddr("10.0.0.5"), nil, "path1/app", Push)
	want := "rule 3 (allow pull,push on ** to group:builders from cidr:10.0.0.0/24,cert:build-1) allows push on path1/app for user alice from 10.0.0.5"
	if d.Reason() != want {
		t.Errorf("reason\n got %q\nwant %q", d.Reason(), want)
	}
	d = a.Check("", netip.MustParseAddr("10.0.1.5"), nil, "path2/app", Pull)
	want = "no rule allows pull on path2/app for an anonymous client from 10.0.1.5: denied by default"
	if d.Reason() != want {
		t.Errorf("reason\n got %q\nwant %q", d.Reason(), want)
	}
}

func TestDecideWithoutRulesDeniesEverything(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Htpasswd = writeHtpasswd(t, t.TempDir(), map[string]string{"alice": "pw"})
	a := newTestAuthorizer(t, cfg, nil)
	for _, act := range allActions {
		if d := a.Check("alice", netip.Addr{}, nil, "app", act); d.Allowed || d.Rule != -1 {
			t.Errorf("%s with users but no rules: %+v, want denied by default", act, d)
		}
	}
}

func TestValidateRejectsBadRules(t *testing.T) {
	for _, c := range []struct {
		name string
		rule Rule
		want string
	}{
		{"no repositories", Rule{Subjects: []string{"anonymous"}, Actions: []Action{Pull}}, "rules[1]: repositories is empty"},
		{"bad glob", Rule{Repositories: []string{"a/["}, Subjects: []string{"anonymous"}, Actions: []Action{Pull}}, "rules[1]: repositories"},
		{"no subjects", Rule{Repositories: []string{"**"}, Actions: []Action{Pull}}, "rules[1]: subjects is empty"},
		{"unknown subject kind", Rule{Repositories: []string{"**"}, Subjects: []string{"role:admin"}, Actions: []Action{Pull}}, `rules[1]: subjects: "role:admin": unknown subject kind "role"`},
		{"bare word", Rule{Repositories: []string{"**"}, Subjects: []string{"everyone"}, Actions: []Action{Pull}}, `rules[1]: subjects: "everyone": want anonymous`},
		{"empty name", Rule{Repositories: []string{"**"}, Subjects: []string{"user:"}, Actions: []Action{Pull}}, `rules[1]: subjects: "user:"`},
		{"unknown group", Rule{Repositories: []string{"**"}, Subjects: []string{"group:nobody"}, Actions: []Action{Pull}}, `no group "nobody"`},
		{"bad CIDR", Rule{Repositories: []string{"**"}, Subjects: []string{"cidr:10.0.0.300/24"}, Actions: []Action{Pull}}, `rules[1]: subjects: "cidr:10.0.0.300/24"`},
		{"CIDR without bits", Rule{Repositories: []string{"**"}, Subjects: []string{"cidr:10.0.0.1"}, Actions: []Action{Pull}}, `rules[1]: subjects: "cidr:10.0.0.1"`},
		{"machine that is a user", Rule{Repositories: []string{"**"}, Subjects: []string{"anonymous"}, Machines: []string{"user:ci"}, Actions: []Action{Pull}}, `rules[1]: machines: "user:ci" is not a machine`},
		{"no actions", Rule{Repositories: []string{"**"}, Subjects: []string{"anonymous"}}, "rules[1]: actions is empty"},
		{"unknown action", Rule{Repositories: []string{"**"}, Subjects: []string{"anonymous"}, Actions: []Action{"write"}}, `rules[1]: actions: unknown action "write"`},
		{"unknown effect", Rule{Repositories: []string{"**"}, Subjects: []string{"anonymous"}, Actions: []Action{Pull}, Effect: "maybe"}, `rules[1]: effect "maybe"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Groups = map[string][]string{"builders": {"ci"}}
			cfg.Rules = []Rule{{Repositories: []string{"**"}, Subjects: []string{"anonymous"}, Actions: []Action{Pull}}, c.rule}
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, c.want)
			}
		})
	}
}
