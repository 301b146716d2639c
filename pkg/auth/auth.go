// Package auth is Shoal's access control: who is asking (users from an
// htpasswd file, groups, the client's address, its verified client
// certificate), what they may do to which repositories (ordered rules over
// repository globs, subjects and actions), and the signed tokens that carry
// those decisions: Docker registry bearer tokens for clients, and short-lived
// P2P capabilities and metainfo signatures for peers.
//
// The origin is the authority; agents, seeders and trackers only check what
// the origin signed.
package auth

import (
	"fmt"
	"net/netip"
)

// Action is something a subject may do to a repository.
type Action string

// The actions rules grant. Admin is checked for the origin's admin API
// against the repository name AdminRepository.
const (
	Pull   Action = "pull"
	Push   Action = "push"
	Delete Action = "delete"
	Admin  Action = "admin"
)

// AdminRepository is the name the admin API is authorized against: a rule
// grants Admin through a repository pattern that matches it ("*" or "**").
const AdminRepository = "*"

// Subject is who a request comes from, as established by Authenticate.
type Subject struct {
	// User is the authenticated user name; empty for an anonymous request.
	User string
	// Groups are the configured groups User belongs to.
	Groups []string
	// Addr is the client's address: the TCP peer, or the forwarded
	// address when the peer is a trusted proxy.
	Addr netip.Addr
	// CertNames are the names of a verified client certificate (its common
	// name and DNS names); empty without one.
	CertNames []string
	// Token is the bearer token the request carried, if any. When set,
	// its grants bound what the request may do.
	Token *Claims
}

// Anonymous reports whether the subject presented no credentials.
func (s Subject) Anonymous() bool { return s.User == "" && s.Token == nil }

// Decision is the outcome of checking one (subject, repository, action).
type Decision struct {
	Allowed bool
	// Rule is the index in Config.Rules of the rule that decided, or -1
	// when no rule matched (default deny) or access control is off.
	Rule int
	// The words saying why are built only when someone asks (logs,
	// `shoalctl auth check`): they cost more than the decision, which is
	// made on every request. A rule's decision keeps the rule and the
	// request (no allocation); others, rarer, keep a function.
	rule    *rule
	q       request
	explain func() string
}

// Reason says in words why the decision was made, for logs and `shoalctl
// auth check`.
func (d Decision) Reason() string {
	if d.explain != nil {
		return d.explain()
	}
	if d.q.action == "" {
		return "" // the zero Decision: nothing was decided
	}
	return ruleReason(d.rule, d.q)
}

// because returns a Decision explained by a fixed text.
func because(allowed bool, rule int, format string, args ...any) Decision {
	return Decision{Allowed: allowed, Rule: rule, explain: func() string { return fmt.Sprintf(format, args...) }}
}

// Access is one repository's granted actions, as in a token's access claim.
type Access struct {
	Type    string   `json:"type"` // "repository" (or "registry" for catalog)
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Claims are the claims of a registry bearer token Shoal issues (or an
// external issuer configured in Config.Token.Issuers).
type Claims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience string   `json:"aud"`
	Access   []Access `json:"access"`
}

// Allows reports whether the token grants action on repository name.
func (c *Claims) Allows(name string, action Action) bool {
	for _, a := range c.Access {
		if a.Type != "repository" || a.Name != name {
			continue
		}
		for _, act := range a.Actions {
			if act == string(action) || act == "*" {
				return true
			}
		}
	}
	return false
}
