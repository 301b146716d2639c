package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/pkg/gc"
)

// gcPath is the admin API's garbage collection resource.
const gcPath = "/admin/v1/gc"

// runGC runs `shoalctl gc start|status|cancel`; args follow "gc". Each
// prints a short summary, or with --json the admin API's answers as they
// come (gc start --wait: the start's answer, then the final status).
func runGC(ctx context.Context, c client, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError{"gc: start, status or cancel?"}
	}
	fs := flag.NewFlagSet("gc "+args[0], flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the admin API's JSON answers")
	var dry, wait *bool
	method := http.MethodGet
	switch args[0] {
	case "status":
	case "cancel":
		method = http.MethodDelete
	case "start":
		method = http.MethodPost
		dry = fs.Bool("dry-run", false, "report what would be deleted, delete nothing")
		wait = fs.Bool("wait", false, "wait for the run to finish and print its report")
	default:
		return usageError{fmt.Sprintf("gc: unknown command %q: start, status or cancel", args[0])}
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	query := ""
	if dry != nil {
		query = fmt.Sprintf("?dryRun=%t", *dry)
	}
	var st gc.Status
	body, err := c.callJSON(ctx, method, gcPath+query, &st)
	if err != nil {
		return err
	}
	if *asJSON {
		if _, err := out.Write(body); err != nil {
			return err
		}
	}
	switch {
	case method == http.MethodPost && !*asJSON:
		fmt.Fprintf(out, "garbage collection started%s\n", dryNote(*dry))
		if !*wait {
			fmt.Fprintln(out, "follow it with: shoalctl gc status")
		}
	case method == http.MethodDelete && !*asJSON:
		if st.Running {
			fmt.Fprintln(out, "cancel requested: the run stops at its next step")
		} else {
			fmt.Fprintln(out, "no garbage collection running")
		}
	case !*asJSON:
		_, err := io.WriteString(out, describeGC(st, time.Now()))
		return err
	}
	if wait == nil || !*wait {
		return nil
	}
	body, st, err = waitGC(ctx, c)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err = out.Write(body)
	} else {
		_, err = io.WriteString(out, describeGC(st, time.Now()))
	}
	return err
}

// waitGC polls the status until no run is in progress.
func waitGC(ctx context.Context, c client) ([]byte, gc.Status, error) {
	for {
		var st gc.Status
		body, err := c.getJSON(ctx, gcPath, &st)
		if err != nil || !st.Running {
			return body, st, err
		}
		select {
		case <-ctx.Done():
			return nil, st, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func dryNote(dry bool) string {
	if dry {
		return " (dry run: nothing is deleted)"
	}
	return ""
}

// describeGC puts a status in a few lines for a person: the running
// collection's progress, or what the last one deleted (or would have).
func describeGC(st gc.Status, now time.Time) string {
	var b strings.Builder
	if st.Running {
		p := st.Progress
		fmt.Fprintf(&b, "garbage collection running%s: %s phase, started %s ago\n", dryNote(p.DryRun), p.Phase, now.Sub(p.StartedAt).Round(time.Second))
		fmt.Fprintf(&b, "  %d repositories, %d manifests, %d blobs scanned, %d unreferenced; deleted so far: %d tags, %d manifests, %d blobs\n",
			p.Repositories, p.Manifests, p.BlobsScanned, p.Candidates, p.TagsDeleted, p.ManifestsDel, p.BlobsDeleted)
	}
	r := st.Last
	if r == nil {
		if !st.Running {
			b.WriteString("no garbage collection has run on this origin yet\n")
		}
		return b.String()
	}
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	what := "last garbage collection"
	if st.Running {
		what = "the one before"
	}
	fmt.Fprintf(&b, "%s%s: finished %s after %s", what, dryNote(r.DryRun),
		r.FinishedAt.Local().Format("2006-01-02 15:04:05"), r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond))
	if r.Holder != "" {
		fmt.Fprintf(&b, " on %s", r.Holder)
	}
	b.WriteString("\n")
	if r.Error != "" {
		fmt.Fprintf(&b, "  failed: %s\n", r.Error)
	}
	tags := make([]string, len(r.Tags))
	for i, t := range r.Tags {
		tags[i] = t.Repo + ":" + t.Tag
	}
	fmt.Fprintf(&b, "  tags:      %s %d%s\n", verb, len(r.Tags), listSome(tags, 5))
	fmt.Fprintf(&b, "  manifests: %s %d\n", verb, len(r.Manifests))
	fmt.Fprintf(&b, "  blobs:     %s %d of %d (%s), %d referenced\n", verb, len(r.Blobs), r.BlobsTotal, humanBytes(r.BytesFreed), r.BlobsMarked)
	if n := len(r.SkippedTags) + len(r.SkippedManifests) + len(r.BlobsSpared); n > 0 {
		fmt.Fprintf(&b, "  spared:    %d tags, %d manifests, %d blobs that a push changed or used during the run\n",
			len(r.SkippedTags), len(r.SkippedManifests), len(r.BlobsSpared))
	}
	if len(r.Uploads) > 0 {
		fmt.Fprintf(&b, "  uploads:   %s %d abandoned upload sessions\n", verb, len(r.Uploads))
	}
	if len(r.MissingManifests) > 0 {
		fmt.Fprintf(&b, "  warning:   %d manifest revisions have no manifest data in storage (--json lists them)\n", len(r.MissingManifests))
	}
	return b.String()
}

// listSome is ": a, b, c" with at most n items, and how many more.
func listSome(items []string, n int) string {
	if len(items) == 0 {
		return ""
	}
	more := ""
	if len(items) > n {
		more = fmt.Sprintf(" and %d more", len(items)-n)
		items = items[:n]
	}
	return " (" + strings.Join(items, ", ") + more + ")"
}

// humanBytes is n in B, KiB, MiB or GiB with one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/unit, 0
	for f >= unit && i < 3 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", f, []string{"KiB", "MiB", "GiB", "TiB"}[i])
}
