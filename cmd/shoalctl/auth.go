package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// authCheckPath is the admin API's rule check.
const authCheckPath = "/admin/v1/auth/check"

// decision is the admin API's answer to an auth check.
type decision struct {
	Allowed bool   `json:"allowed"`
	Rule    int    `json:"rule"`
	Reason  string `json:"reason"`
}

// authCheck runs `shoalctl auth check`: it asks the origin what its rules
// decide for a user, repository and action, and prints the decision and
// the rule on one line (or the JSON with --json). A denial returns
// errDenied, so that scripts can test the exit status.
func authCheck(ctx context.Context, c client, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("auth check", flag.ContinueOnError)
	user := fs.String("user", "", "user name; empty: an anonymous request")
	repo := fs.String("repository", "", "repository name (the admin API is \"*\")")
	action := fs.String("action", "", "pull, push, delete or admin")
	addr := fs.String("addr", "", "client IP address, for cidr: rules")
	var certs []string
	fs.Func("cert", "a verified client-certificate name, for cert: rules (repeat for several)", func(s string) error {
		certs = append(certs, s)
		return nil
	})
	asJSON := fs.Bool("json", false, "print the origin's JSON answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *repo == "" || *action == "" {
		return usageError{"auth check: --repository and --action are required"}
	}
	q := url.Values{"user": {*user}, "repository": {*repo}, "action": {*action}}
	if *addr != "" {
		q.Set("addr", *addr)
	}
	for _, n := range certs {
		q.Add("cert", n)
	}
	body, err := c.do(ctx, http.MethodGet, authCheckPath+"?"+q.Encode())
	if err != nil {
		return err
	}
	var d decision
	if err := json.Unmarshal(body, &d); err != nil {
		return fmt.Errorf("reading the origin's answer: %w", err)
	}
	if *asJSON {
		if _, err := out.Write(body); err != nil {
			return err
		}
	} else if _, err := fmt.Fprintln(out, describe(d, *user, *repo, *action, *addr, certs)); err != nil {
		return err
	}
	if !d.Allowed {
		return errDenied
	}
	return nil
}

// describe puts a decision in one line: `allowed: user "alice" from
// 10.0.0.5 may push to "team/app" (rule 2: ...)`.
func describe(d decision, user, repo, action, addr string, certs []string) string {
	var b strings.Builder
	if d.Allowed {
		b.WriteString("allowed: ")
	} else {
		b.WriteString("denied: ")
	}
	if user == "" {
		b.WriteString("anonymous")
	} else {
		fmt.Fprintf(&b, "user %q", user)
	}
	if addr != "" {
		fmt.Fprintf(&b, " from %s", addr)
	}
	if len(certs) > 0 {
		fmt.Fprintf(&b, " with certificate %s", strings.Join(certs, ", "))
	}
	if d.Allowed {
		b.WriteString(" may ")
	} else {
		b.WriteString(" may not ")
	}
	fmt.Fprintf(&b, "%s %q (", action, repo)
	if d.Rule >= 0 {
		fmt.Fprintf(&b, "rule %d: ", d.Rule)
	} else {
		b.WriteString("no rule: ")
	}
	b.WriteString(d.Reason)
	b.WriteString(")")
	return b.String()
}
