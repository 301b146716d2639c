// Command shoalctl drives an origin's admin API.
//
//	shoalctl [--admin http://127.0.0.1:5001] gc start [--dry-run] [--wait]
//	shoalctl gc status
//	shoalctl gc cancel
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

const usage = `usage: shoalctl [--admin URL] gc start [--dry-run] [--wait] | gc status | gc cancel

The origin serves its admin API when started with --admin-listen ADDR.
`

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "shoalctl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("shoalctl", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	admin := fs.String("admin", envOr("SHOAL_ADMIN", "http://127.0.0.1:5001"), "origin admin API base URL ($SHOAL_ADMIN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 2 || rest[0] != "gc" {
		fs.Usage()
		return errors.New("unknown command")
	}
	c := client{base: strings.TrimRight(*admin, "/"), http: &http.Client{Timeout: 30 * time.Second}}
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

type client struct {
	base string
	http *http.Client
}

func (c client) do(ctx context.Context, method, query string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/admin/v1/gc"+query, nil)
	if err != nil {
		return nil, err
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
			return nil, fmt.Errorf("%s %s: %s", method, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s %s: %s", method, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (c client) print(ctx context.Context, out io.Writer, method, query string) error {
	body, err := c.do(ctx, method, query)
	if err != nil {
		return err
	}
	_, err = out.Write(body)
	return err
}

// wait polls the status until no run is in progress, then prints it.
func (c client) wait(ctx context.Context, out io.Writer) error {
	for {
		body, err := c.do(ctx, http.MethodGet, "")
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
