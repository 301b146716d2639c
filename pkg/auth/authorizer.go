package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrBadCredentials is wrapped by Authenticate's errors when a request
// carries credentials that do not check out: an unknown user, a wrong
// password, a token that is expired, forged or meant for another service.
// Such a request gets a 401, never anonymous access.
var ErrBadCredentials = errors.New("bad credentials")

var errNoHtpasswd = errors.New("no htpasswd file is configured")

// Options are an Authorizer's collaborators.
type Options struct {
	// Key signs the tokens the token endpoint issues and verifies them
	// when they come back. Required.
	Key *Key
	// Logger receives reloads of the htpasswd file and their failures.
	// Nil: slog.Default().
	Logger *slog.Logger
	// Registerer, when set, gets the shoal_auth_* metrics.
	Registerer prometheus.Registerer
	// Now is the clock, for tests. Nil: time.Now.
	Now func() time.Time
}

// Authorizer authenticates requests, decides what they may do, and issues
// tokens. It is safe for concurrent use.
type Authorizer struct {
	cfg      Config
	rules    []rule
	groupsOf map[string][]string // user -> the groups they are in
	proxies  []netip.Prefix
	users    *htpasswd // nil without Config.Htpasswd
	tokens   *tokens
	log      *slog.Logger
	now      func() time.Time
	metrics  *metrics
}

// New returns an Authorizer for cfg. cfg is validated, and the htpasswd
// file and external issuers' keys are read now, so that a mistake stops
// the origin at start rather than locking everyone out later. A zero
// token section takes DefaultConfig's values.
func New(cfg Config, opts Options) (*Authorizer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("auth config: %w", err)
	}
	if opts.Key == nil {
		return nil, errors.New("auth: no signing key (Options.Key): the token endpoint needs one to sign tokens")
	}
	a := &Authorizer{cfg: cfg, log: opts.Logger, now: opts.Now, groupsOf: map[string][]string{}}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	for i, r := range cfg.Rules {
		c, err := compileRule(i, r, cfg.Groups)
		if err != nil {
			return nil, err
		}
		a.rules = append(a.rules, c)
	}
	groupNames := make([]string, 0, len(cfg.Groups))
	for g := range cfg.Groups {
		groupNames = append(groupNames, g)
	}
	slices.Sort(groupNames)
	for _, g := range groupNames {
		for _, u := range cfg.Groups[g] {
			if !slices.Contains(a.groupsOf[u], g) {
				a.groupsOf[u] = append(a.groupsOf[u], g)
			}
		}
	}
	a.proxies, _ = parseProxies(cfg.TrustedProxies) // validated above
	if cfg.Htpasswd != "" {
		u, err := openHtpasswd(cfg.Htpasswd, a.now, a.log)
		if err != nil {
			return nil, err
		}
		a.users = u
	}
	t, err := newTokens(cfg.Token, opts.Key, a.now)
	if err != nil {
		return nil, err
	}
	a.tokens = t
	// Last, so that a New that fails registers nothing and can be retried.
	a.metrics = newMetrics(opts.Registerer)
	return a, nil
}

// Authenticate establishes who sent r: Basic credentials are checked
// against the htpasswd file, a Bearer token against the origin's key and
// the configured issuers. A request without credentials gets an anonymous
// Subject and no error; bad credentials get an error wrapping
// ErrBadCredentials. The client's address and verified certificate names
// are filled in either way.
func (a *Authorizer) Authenticate(r *http.Request) (Subject, error) {
	s := Subject{Addr: a.clientAddr(r), CertNames: certNames(r)}
	h := r.Header.Get("Authorization")
	if h == "" {
		return s, nil
	}
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "Basic"):
		user, pass, ok := r.BasicAuth()
		if !ok {
			a.metrics.badCredentials.WithLabelValues("basic").Inc()
			return s, fmt.Errorf("malformed Basic credentials: %w", ErrBadCredentials)
		}
		if err := a.checkPassword(user, pass); err != nil {
			a.metrics.badCredentials.WithLabelValues("basic").Inc()
			return s, err
		}
		s.User = user
	case strings.EqualFold(scheme, "Bearer"):
		c, err := a.tokens.verify(strings.TrimSpace(cred))
		if err != nil {
			a.metrics.badCredentials.WithLabelValues("bearer").Inc()
			return s, err
		}
		s.User, s.Token = c.Subject, c
	default:
		a.metrics.badCredentials.WithLabelValues("scheme").Inc()
		return s, fmt.Errorf("authorization scheme %q is neither Basic nor Bearer: %w", scheme, ErrBadCredentials)
	}
	s.Groups = a.groupsOf[s.User]
	return s, nil
}

// checkPassword checks a user's password against the htpasswd file.
func (a *Authorizer) checkPassword(user, pass string) error {
	if a.users == nil {
		return fmt.Errorf("user %q: %w: %w", user, errNoHtpasswd, ErrBadCredentials)
	}
	return a.users.check(user, pass)
}

// Decide says whether s may do action on repository repo. The rules
// decide; a token s carries can only narrow that to what it grants. A token
// from an external issuer is the exception: its grants decide, and only
// deny rules can take away from them.
func (a *Authorizer) Decide(s Subject, repo string, action Action) Decision {
	d := a.decide(s, repo, action)
	a.metrics.decision(action, d.Allowed)
	return d
}

func (a *Authorizer) decide(s Subject, repo string, action Action) Decision {
	q := request{user: s.User, groups: a.groupsOf[s.User], addr: s.Addr, certs: s.CertNames, repo: repo, action: action}
	if repo != AdminRepository && !validName(repo) {
		return because(false, -1, "%q is not a valid repository name: denied", repo)
	}
	if s.Token != nil && s.Token.Issuer != a.cfg.Token.Issuer {
		for i := range a.rules {
			if r := &a.rules[i]; r.deny && r.matches(q) {
				return evaluate(a.rules[i:i+1], q)
			}
		}
		if !s.Token.Allows(repo, action) {
			return because(false, -1, "the token from %s does not grant %s on %s", s.Token.Issuer, action, repo)
		}
		return because(true, -1, "the token from %s grants %s on %s to %s", s.Token.Issuer, action, repo, q)
	}
	d := evaluate(a.rules, q)
	if d.Allowed && s.Token != nil && !s.Token.Allows(repo, action) {
		return Decision{Rule: d.Rule, explain: func() string {
			return fmt.Sprintf("%s, but the request's token does not grant %s on %s (ask the token endpoint for scope repository:%s:%s)", d.Reason(), action, repo, repo, action)
		}}
	}
	return d
}

// Check decides for a subject described by hand rather than by a request:
// `shoalctl auth check` asks what a user, from an address, with a
// certificate, may do.
func (a *Authorizer) Check(user string, addr netip.Addr, certNames []string, repo string, action Action) Decision {
	return a.Decide(Subject{User: user, Groups: a.groupsOf[user], Addr: addr, CertNames: certNames}, repo, action)
}

// Challenge returns the WWW-Authenticate value for a 401 (or, with
// insufficient, a 403-worthy "insufficient_scope") answer to r that needs
// scope: `Bearer realm="...",service="...",scope="repository:NAME:pull,push"`.
func (a *Authorizer) Challenge(r *http.Request, scope []Access, insufficient bool) string {
	var b strings.Builder
	b.WriteString("Bearer realm=" + quote(a.realm(r)) + ",service=" + quote(a.cfg.Token.Service))
	if len(scope) > 0 {
		b.WriteString(",scope=" + quote(formatScopes(scope)))
	}
	if insufficient {
		b.WriteString(`,error="insufficient_scope"`)
	}
	return b.String()
}

// realm is the token endpoint's URL as the client reached r.
func (a *Authorizer) realm(r *http.Request) string {
	if a.cfg.Token.Realm != "" {
		return a.cfg.Token.Realm
	}
	return a.scheme(r) + "://" + r.Host + TokenPath
}

// TokenPath is where the origin serves TokenHandler on its registry listener.
const TokenPath = "/auth/token"

// quote makes s an RFC 9110 quoted-string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// formatScopes writes accesses in the scope grammar, space-separated.
func formatScopes(scope []Access) string {
	parts := make([]string, 0, len(scope))
	for _, s := range scope {
		typ := s.Type
		if typ == "" {
			typ = "repository"
		}
		parts = append(parts, typ+":"+s.Name+":"+strings.Join(s.Actions, ","))
	}
	return strings.Join(parts, " ")
}
