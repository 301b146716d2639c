// Command shoalctl drives an origin's admin API, makes the cluster's
// certificates, and runs a whole Shoal on loopback to try it (demo).
//
//	shoalctl demo [--agents 4]
//	shoalctl [--admin http://127.0.0.1:5001] [--admin-user U] gc start [--dry-run] [--wait] [--json]
//	shoalctl gc status|cancel [--json]
//	shoalctl cluster status [--digest D] [--tracker URL]
//	shoalctl preheat REPOSITORY:TAG [--agents HOST:PORT,...]
//	shoalctl auth check --user U --repository R --action A [--addr IP] [--cert NAME] [--json]
//	shoalctl certs init|issue ...
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
)

const usage = `usage: shoalctl [--admin URL] [--admin-user USER] COMMAND
commands:
  demo [--agents N] [--size 128MiB] [--layers N] [--keep]
                                  start an origin, a tracker and N agents on loopback, push an image,
                                  pull it through every agent at once, show what the origin sent
  gc start [--dry-run] [--wait] [--json]
                                  start a garbage collection (and wait for its report)
  gc status [--json]              the running or last collection
  gc cancel [--json]              stop the running collection
  cluster status [--digest D] [--tracker URL]... [--json]
                                  the origin cluster's members, the owners of a blob, and what the
                                  trackers (their HTTP address, e.g. http://127.0.0.1:7081) know of it
  preheat [REGISTRY/]REPOSITORY[:TAG|@DIGEST] [--agents HOST:PORT,...] [--pull-user U] [--json]
                                  before a rollout: the owners of the image's blobs read them from
                                  storage and compute their metainfo, then the agents named fetch
                                  them into their caches; exits 1 if any failed
  auth check --user U --repository R --action pull|push|delete|admin [--addr IP] [--cert NAME] [--json]
                                  what the origin's rules decide, and which rule decides;
                                  exits 1 when denied (--user "" is anonymous)
  certs init|issue ...            make the cluster CA and host certificates (shoalctl certs, docs/certificates.md)
  help                            this text

The origin serves its admin API when started with --admin-listen ADDR. With access
control on, give --admin-user (or $SHOAL_ADMIN_USER) and the password in
$SHOAL_ADMIN_PASSWORD. --json prints the admin API's answers as they are, for scripts.
`

// errDenied makes shoalctl exit 1 without a message: auth check printed
// the denial already.
var errDenied = errors.New("denied")

// usageError is a command line shoalctl does not understand: it prints
// the message and its usage, and exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errFlags makes shoalctl exit 2 without a message: the flag package
// printed what was wrong and the command's flags.
var errFlags = errors.New("bad flags")

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout)
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errDenied), errors.Is(err, errPreheat):
		os.Exit(1)
	case errors.Is(err, errInterrupted):
		os.Exit(130)
	case errors.Is(err, errFlags):
		os.Exit(2)
	case errors.As(err, &ue):
		if ue.msg != "" {
			fmt.Fprintln(os.Stderr, "shoalctl:", ue.msg)
		}
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	default:
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
		return flagError(err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usageError{}
	}
	switch rest[0] {
	case "help":
		_, err := fmt.Fprint(out, usage)
		return err
	case "certs":
		return runCerts(rest[1:], out) // local files only: no admin API
	case "demo":
		return runDemo(ctx, rest[1:], out) // starts its own origin
	case "gc", "auth", "cluster", "preheat":
	default:
		return usageError{fmt.Sprintf("unknown command %q", rest[0])}
	}
	c := client{base: strings.TrimRight(*admin, "/"), http: &http.Client{Timeout: 30 * time.Second}, user: *user}
	if c.user != "" {
		c.password = os.Getenv("SHOAL_ADMIN_PASSWORD")
		if c.password == "" {
			return fmt.Errorf("--admin-user %s given, but $SHOAL_ADMIN_PASSWORD is empty: put the password there", c.user)
		}
	}
	switch rest[0] {
	case "gc":
		return runGC(ctx, c, rest[1:], out)
	case "cluster":
		if len(rest) < 2 || rest[1] != "status" {
			return usageError{"cluster: the command is cluster status"}
		}
		return clusterStatusCmd(ctx, c, rest[2:], out)
	case "preheat":
		return preheat(ctx, c, rest[1:], out)
	default:
		if len(rest) < 2 || rest[1] != "check" {
			return usageError{"auth: the command is auth check"}
		}
		return authCheck(ctx, c, rest[2:], out)
	}
}

// flagError turns an error of FlagSet.Parse (which printed it and the
// flags already) into errFlags, and leaves -h's flag.ErrHelp as it is.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %v", errFlags, err)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

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

// getJSON GETs pathQuery from the admin API into v, and returns the body
// as it came, for --json.
func (c client) getJSON(ctx context.Context, pathQuery string, v any) ([]byte, error) {
	return c.callJSON(ctx, http.MethodGet, pathQuery, v)
}

// callJSON sends method to pathQuery and decodes the answer into v.
func (c client) callJSON(ctx context.Context, method, pathQuery string, v any) ([]byte, error) {
	body, err := c.do(ctx, method, pathQuery)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("reading the answer to %s %s: %w", method, pathQuery, err)
	}
	return body, nil
}
