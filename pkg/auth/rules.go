package auth

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/internal/glob"
)

// rule is a compiled Rule.
type rule struct {
	index    int
	repos    []glob.Pattern
	subjects []matcher
	machines []matcher
	actions  []Action
	deny     bool
	text     string // the rule in words, for Decision.Reason
}

// matcher is one compiled subject or machine entry.
type matcher struct {
	kind   string // anonymous, authenticated, user, group, cidr, cert
	name   string
	prefix netip.Prefix
}

// compileRule checks a Rule and compiles it; errors name the rule's index.
func compileRule(i int, r Rule, groups map[string][]string) (rule, error) {
	fail := func(format string, args ...any) (rule, error) {
		return rule{}, fmt.Errorf("rules[%d]: %s", i, fmt.Sprintf(format, args...))
	}
	c := rule{index: i, actions: r.Actions}
	if len(r.Repositories) == 0 {
		return fail("repositories is empty (use [\"**\"] for every repository)")
	}
	for _, p := range r.Repositories {
		g, err := glob.Compile(p)
		if err != nil {
			return fail("repositories: %v", err)
		}
		c.repos = append(c.repos, g)
	}
	if len(r.Subjects) == 0 {
		return fail("subjects is empty (use [anonymous] for anyone)")
	}
	for _, s := range r.Subjects {
		m, err := parseMatcher(s, groups)
		if err != nil {
			return fail("subjects: %v", err)
		}
		c.subjects = append(c.subjects, m)
	}
	for _, s := range r.Machines {
		m, err := parseMatcher(s, groups)
		if err != nil {
			return fail("machines: %v", err)
		}
		if m.kind != "cidr" && m.kind != "cert" {
			return fail("machines: %q is not a machine (want cidr:ADDR/BITS or cert:NAME)", s)
		}
		c.machines = append(c.machines, m)
	}
	if len(r.Actions) == 0 {
		return fail("actions is empty (want some of pull, push, delete, admin)")
	}
	for _, a := range r.Actions {
		if !slices.Contains(allActions, a) {
			return fail("actions: unknown action %q (want pull, push, delete or admin)", a)
		}
	}
	switch r.Effect {
	case "", "allow":
	case "deny":
		c.deny = true
	default:
		return fail("effect %q is neither allow nor deny", r.Effect)
	}
	c.text = describeRule(r, c.deny)
	return c, nil
}

var allActions = []Action{Pull, Push, Delete, Admin}

// parseMatcher reads a subject or machine entry.
func parseMatcher(s string, groups map[string][]string) (matcher, error) {
	if s == "anonymous" || s == "authenticated" {
		return matcher{kind: s}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return matcher{}, fmt.Errorf("%q: want anonymous, authenticated, user:NAME, group:NAME, cidr:ADDR/BITS or cert:NAME", s)
	}
	m := matcher{kind: kind, name: name}
	switch kind {
	case "user", "cert":
	case "group":
		if _, ok := groups[name]; !ok {
			return matcher{}, fmt.Errorf("%q: no group %q in groups", s, name)
		}
	case "cidr":
		p, err := netip.ParsePrefix(name)
		if err != nil {
			return matcher{}, fmt.Errorf("%q: %v", s, err)
		}
		m.prefix = p.Masked()
	default:
		return matcher{}, fmt.Errorf("%q: unknown subject kind %q (want anonymous, authenticated, user, group, cidr or cert)", s, kind)
	}
	return m, nil
}

func describeRule(r Rule, deny bool) string {
	effect := "allow"
	if deny {
		effect = "deny"
	}
	acts := make([]string, len(r.Actions))
	for i, a := range r.Actions {
		acts[i] = string(a)
	}
	s := fmt.Sprintf("%s %s on %s to %s", effect, strings.Join(acts, ","),
		strings.Join(r.Repositories, ","), strings.Join(r.Subjects, ","))
	if len(r.Machines) > 0 {
		s += " from " + strings.Join(r.Machines, ",")
	}
	return s
}

// request is what the rules are evaluated against.
type request struct {
	user   string
	groups []string
	addr   netip.Addr
	certs  []string
	repo   string
	action Action
}

// matches reports whether the rule applies to q.
func (r *rule) matches(q request) bool {
	if !slices.Contains(r.actions, q.action) {
		return false
	}
	if !slices.ContainsFunc(r.repos, func(p glob.Pattern) bool { return p.Match(q.repo) }) {
		return false
	}
	if !slices.ContainsFunc(r.subjects, q.is) {
		return false
	}
	return len(r.machines) == 0 || slices.ContainsFunc(r.machines, q.is)
}

// is reports whether q's subject or machine is m.
func (q request) is(m matcher) bool {
	switch m.kind {
	case "anonymous":
		return true
	case "authenticated":
		return q.user != ""
	case "user":
		return q.user != "" && q.user == m.name
	case "group":
		return q.user != "" && slices.Contains(q.groups, m.name)
	case "cidr":
		return q.addr.IsValid() && m.prefix.Contains(q.addr.Unmap())
	case "cert":
		return slices.Contains(q.certs, m.name)
	}
	return false
}

// ruleReason says why rule r (nil: none matched) decided q.
func ruleReason(r *rule, q request) string {
	if r == nil {
		return fmt.Sprintf("no rule allows %s on %s for %s: denied by default", q.action, q.repo, q.who())
	}
	verb := "allows"
	if r.deny {
		verb = "denies"
	}
	return fmt.Sprintf("rule %d (%s) %s %s on %s for %s", r.index, r.text, verb, q.action, q.repo, q.who())
}

// String describes q's subject, for reasons formatted lazily.
func (q request) String() string { return q.who() }

// who describes q's subject for a Decision's reason.
func (q request) who() string {
	var b strings.Builder
	if q.user != "" {
		b.WriteString("user " + q.user)
	} else {
		b.WriteString("an anonymous client")
	}
	if q.addr.IsValid() {
		b.WriteString(" from " + q.addr.String())
	}
	if len(q.certs) > 0 {
		b.WriteString(" with certificate " + strings.Join(q.certs, ","))
	}
	return b.String()
}

// evaluate runs the rules in order; the first match decides.
func evaluate(rules []rule, q request) Decision {
	for i := range rules {
		r := &rules[i]
		if !r.matches(q) {
			continue
		}
		return Decision{Allowed: !r.deny, Rule: r.index, rule: r, q: q}
	}
	return Decision{Rule: -1, q: q}
}
