// Command shoalctl drives an origin's admin API.
//
//	shoalctl [--admin http://127.0.0.1:5001] [--admin-user U] gc start [--dry-run] [--wait]
//	shoalctl gc status
//	shoalctl gc cancel
//	shoalctl auth check --user U --repository R --action A [--addr IP] [--cert NAME] [--json]
//
// With access control on, the admin API needs a user allowed the admin
// action: --admin-user (or $SHOAL_ADMIN_USER), and the password in
// $SHOAL_ADMIN_PASSWORD, never on the command line where ps shows it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/pkg/gc"
)

const usage = `usage: shoalctl [--admin URL] [--admin-user USER] COMMAND
commands:
  gc start [--dry-run] [--wait]   start a garbage collection (and wait for its report)
  gc status                       the running or last collection
  gc cancel                       stop the running collection
  auth check --user U --repository R --action pull|push|delete|admin [--addr IP] [--cert NAME] [--json]
                                  what the origin's rules decide, and which rule decides;
                                  exits 1 when denied (--user "" is anonymous)
  certs init|issue ...            make the cluster CA and host certificates (shoalctl certs, docs/certificates.md)

The origin serves its admin API when started with --admin-listen ADDR. With access
control on, give --admin-user (or $SHOAL_ADMIN_USER) and the password in
$SHOAL_ADMIN_PASSWORD.
`

// errDenied makes shoalctl exit 1 without a message: auth check printed
// the denial already.
var errDenied = errors.New("denied")

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout)
	if errors.Is(err, errDenied) {
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoalctl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("shoalctl", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	admin := fs.String("admin", envOr("SHOAL_ADMIN", "http://127.0.0.1:5001"), "origin admin API base URL ($SHOAL_ADMIN)")
	user := fs.String("admin-user", os.Getenv("SHOAL_ADMIN_USER"), "user for the admin API when access control is on ($SHOAL_ADMIN_USER); the password comes from $SHOAL_ADMIN_PASSWORD")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 && rest[0] == "certs" {
		return runCerts(rest[1:], out) // local files only: no admin API
	}
	if len(rest) < 2 || (rest[0] != "gc" && rest[0] != "auth") {
		fs.Usage()
		return errors.New("unknown command")
	}
	c := client{base: strings.TrimRight(*admin, "/"), http: &http.Client{Timeout: 30 * time.Second}, user: *user}
	if c.user != "" {
		c.password = os.Getenv("SHOAL_ADMIN_PASSWORD")
		if c.password == "" {
			return fmt.Errorf("--admin-user %s given, but $SHOAL_ADMIN_PASSWORD is empty: put the password there", c.user)
		}
	}
	if rest[0] == "auth" {
		if rest[1] != "check" {
			fs.Usage()
			return fmt.Errorf("unknown auth command %q", rest[1])
		}
		return authCheck(ctx, c, rest[2:], out)
	}
	switch rest[1] {
	case "status":
		return c.print(ctx, out, http.MethodGet, "")
	case "cancel":
		return c.print(ctx, out, http.MethodDelete, "")
	case "start":
		sfs := flag.NewFlagSet("gc start", flag.ContinueOnError)
		dry := sfs.Bool("dry-run", false, "report what would be deleted, delete nothing")
		wait := sfs.Bool("wait", false, "wait for the run to finish and print its report")
		if err := sfs.Parse(rest[2:]); err != nil {
			return err
		}
		if err := c.print(ctx, out, http.MethodPost, fmt.Sprintf("?dryRun=%t", *dry)); err != nil {
			return err
		}
		if *wait {
			return c.wait(ctx, out)
		}
		return nil
	}
	fs.Usage()
	return fmt.Errorf("unknown gc command %q", rest[1])
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// gcPath is the admin API's garbage collection resource.
const gcPath = "/admin/v1/gc"

type client struct {
	base string
	http *http.Client
	// user and password are sent as Basic credentials when user is set.
	user, password string
}

// do sends method to the admin API's path and query and returns the body
// of a successful answer.
func (c client) do(ctx context.Context, method, pathQuery string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+pathQuery, nil)
	if err != nil {
		return nil, err
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (is the origin started with --admin-listen?)", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			if resp.StatusCode == http.StatusUnauthorized && c.user == "" {
				e.Error += " (give --admin-user and $SHOAL_ADMIN_PASSWORD)"
			}
			return nil, fmt.Errorf("%s %s: %s", method, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s %s: %s", method, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (c client) print(ctx context.Context, out io.Writer, method, query string) error {
	body, err := c.do(ctx, method, gcPath+query)
	if err != nil {
		return err
	}
	_, err = out.Write(body)
	return err
}

// wait polls the status until no run is in progress, then prints it.
func (c client) wait(ctx context.Context, out io.Writer) error {
	for {
		body, err := c.do(ctx, http.MethodGet, gcPath)
		if err != nil {
			return err
		}
		var st gc.Status
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("reading status: %w", err)
		}
		if !st.Running {
			_, err = out.Write(body)
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
