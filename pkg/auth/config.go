package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/daemon"
)

// Config is access control's configuration: the origin's `--auth-config`
// file, or the `auth:` section of origin.yaml. docs/auth.md is its reference.
type Config struct {
	// Htpasswd is the path of an htpasswd file with bcrypt entries (what
	// `htpasswd -B` writes). It is re-read when it changes, so users can be
	// added or removed without a restart. Empty: no local users; only
	// anonymous requests and external issuers' tokens are known.
	Htpasswd string `yaml:"htpasswd"`
	// Groups maps a group name to its members' user names, for the rules'
	// `group:NAME` subjects.
	Groups map[string][]string `yaml:"groups"`
	// TrustedProxies are the addresses or prefixes ("10.1.2.3",
	// "10.1.0.0/16") of reverse proxies whose X-Forwarded-For and
	// X-Forwarded-Proto headers are believed. None by default: a forwarded
	// header from anyone else is ignored, since it is whatever the client
	// wrote.
	TrustedProxies []string `yaml:"trustedProxies"`
	// Rules are the access rules, in order: the first rule that matches a
	// request's repository, subject, machine and action decides. A request
	// no rule matches is denied.
	Rules []Rule `yaml:"rules"`
	// Token configures the bearer tokens the token endpoint issues and
	// which tokens are accepted.
	Token TokenConfig `yaml:"token"`
}

// Rule is one access rule. It matches a request when the repository
// matches one of Repositories, the subject one of Subjects, the machine one
// of Machines (when any are given), and the action is one of Actions.
type Rule struct {
	// Repositories are globs over the repository name: `*` matches within
	// one path component, `**` any number of components ("team/**",
	// "**"). The admin API is checked against the name "*"
	// (AdminRepository), which "*" and "**" match.
	Repositories []string `yaml:"repositories"`
	// Subjects are who the rule is about, any one of which matches:
	// "anonymous" (anyone, with or without credentials), "authenticated"
	// (any user who proved who they are), "user:NAME", "group:NAME",
	// "cidr:ADDR/BITS" (the client's address) or "cert:NAME" (a name of the
	// client's verified certificate).
	Subjects []string `yaml:"subjects"`
	// Machines, when given, also restrict where the request may come from:
	// one of these "cidr:ADDR/BITS" or "cert:NAME" entries must match as
	// well as a subject ("alice, from a build machine").
	Machines []string `yaml:"machines"`
	// Actions are what the rule allows or denies: pull, push, delete, admin.
	Actions []Action `yaml:"actions"`
	// Effect is "allow" (the default) or "deny".
	Effect string `yaml:"effect"`
}

// TokenConfig is about the registry bearer tokens.
type TokenConfig struct {
	// Realm is the token endpoint's URL put in challenges. Empty, the
	// default: the origin's own endpoint, <scheme>://<request Host>/auth/token,
	// so that clients reach it the way they reached the registry.
	Realm string `yaml:"realm"`
	// Service is the service name in challenges, and the audience (aud)
	// every accepted token must carry.
	Service string `yaml:"service"`
	// Issuer is the iss of the tokens this origin issues.
	Issuer string `yaml:"issuer"`
	// TTL is how long an issued access token is valid. Clients fetch a new
	// one when it expires, so this bounds how long a token outlives a
	// change of rules. At least 1m: older clients assume 60s.
	TTL time.Duration `yaml:"ttl"`
	// RefreshTTL is how long a refresh token (what `docker login` stores as
	// its identity token) stays valid. Changing the user's password or
	// removing the user revokes it earlier.
	RefreshTTL time.Duration `yaml:"refreshTTL"`
	// Issuers are external token issuers whose tokens are accepted,
	// verified by their public keys.
	Issuers []ExternalIssuer `yaml:"issuers"`
}

// ExternalIssuer is a token service, other than the origin, whose tokens
// the origin accepts. Its tokens' access claims decide what they grant,
// bounded only by deny rules.
type ExternalIssuer struct {
	// Issuer is the iss its tokens carry.
	Issuer string `yaml:"issuer"`
	// PublicKey is the path of its PEM public key ("PUBLIC KEY", or a
	// "CERTIFICATE"): Ed25519, ECDSA or RSA. Tokens must be signed with the
	// algorithm family of the key (EdDSA, ES256/384/512 by curve, RS* or PS*).
	PublicKey string `yaml:"publicKey"`
}

// DefaultConfig returns the token settings every config starts from; it
// has no rules and no users, so access control is off (Enabled is false).
func DefaultConfig() Config {
	return Config{Token: TokenConfig{
		// "shoal" in both: a cluster has one service; sites that run
		// several name them apart.
		Service: "shoal",
		Issuer:  "shoal",
		// Five minutes: registry:2's token servers' common choice, long
		// enough that a pull needs one token, short enough that a revoked
		// grant lapses soon.
		TTL: 5 * time.Minute,
		// Thirty days: a host that ran `docker login` keeps working for a
		// month without storing the password.
		RefreshTTL: 30 * 24 * time.Hour,
	}}
}

// LoadConfig reads an auth config file over DefaultConfig, rejecting
// unknown keys, and validates it.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if err := daemon.LoadYAML(path, &c); err != nil {
		return Config{}, fmt.Errorf("auth config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("auth config %s: %w", path, err)
	}
	return c, nil
}

// Enabled reports whether the config turns access control on: it names
// users, rules or external token issuers (a site may leave every grant to
// its own token service). Without any, the origin is open.
func (c Config) Enabled() bool {
	return c.Htpasswd != "" || len(c.Rules) > 0 || len(c.Token.Issuers) > 0
}

// Validate checks the config and says what is wrong with each rule by its
// index. Token settings left zero stand for their defaults.
func (c Config) Validate() error {
	var errs []error
	if _, err := parseProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	for name, members := range c.Groups {
		if name == "" || strings.ContainsAny(name, ": ") {
			errs = append(errs, fmt.Errorf("groups: name %q must be non-empty, without ':' or spaces", name))
		}
		for _, m := range members {
			if m == "" {
				errs = append(errs, fmt.Errorf("groups.%s: empty user name", name))
			}
		}
	}
	for i, r := range c.Rules {
		if _, err := compileRule(i, r, c.Groups); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.withDefaults().Token.validate()...)
	return errors.Join(errs...)
}

// withDefaults fills the token settings left zero with DefaultConfig's, as
// when an `auth:` section is decoded over a zero Config.
func (c Config) withDefaults() Config {
	def := DefaultConfig().Token
	if c.Token.Service == "" {
		c.Token.Service = def.Service
	}
	if c.Token.Issuer == "" {
		c.Token.Issuer = def.Issuer
	}
	if c.Token.TTL == 0 {
		c.Token.TTL = def.TTL
	}
	if c.Token.RefreshTTL == 0 {
		c.Token.RefreshTTL = max(def.RefreshTTL, c.Token.TTL)
	}
	return c
}

func (t TokenConfig) validate() []error {
	var errs []error
	if t.Service == "" {
		errs = append(errs, errors.New("token.service is empty"))
	}
	if t.Issuer == "" {
		errs = append(errs, errors.New("token.issuer is empty"))
	}
	if t.TTL < time.Minute {
		errs = append(errs, fmt.Errorf("token.ttl %s is below 1m: clients assume a token lives at least 60s", t.TTL))
	}
	if t.RefreshTTL < t.TTL {
		errs = append(errs, fmt.Errorf("token.refreshTTL %s is below token.ttl %s", t.RefreshTTL, t.TTL))
	}
	if t.Realm != "" && !strings.HasPrefix(t.Realm, "https://") && !strings.HasPrefix(t.Realm, "http://") {
		errs = append(errs, fmt.Errorf("token.realm %q must be an http:// or https:// URL", t.Realm))
	}
	for i, is := range t.Issuers {
		switch {
		case is.Issuer == "":
			errs = append(errs, fmt.Errorf("token.issuers[%d]: issuer is empty", i))
		case is.Issuer == t.Issuer:
			errs = append(errs, fmt.Errorf("token.issuers[%d]: issuer %q is the origin's own token.issuer", i, is.Issuer))
		}
		if is.PublicKey == "" {
			errs = append(errs, fmt.Errorf("token.issuers[%d]: publicKey is empty", i))
		}
	}
	return errs
}

// parseProxies reads TrustedProxies: addresses or prefixes.
func parseProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trustedProxies[%d]: %q is neither an address nor ADDR/BITS", i, s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
