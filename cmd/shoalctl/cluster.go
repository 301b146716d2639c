package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/adminapi"
	"github.com/shoal-dev/shoal/internal/promscrape"
)

// trackerPeer is an entry of a tracker's /debug/peers listing.
type trackerPeer struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Locality string `json:"locality,omitempty"`
	Complete bool   `json:"complete"`
	Origin   bool   `json:"origin"`
	Pieces   int    `json:"pieces"`
}

// trackerState is what shoalctl learned from one tracker's HTTP side.
type trackerState struct {
	URL string `json:"url"`
	// Error is why the tracker could not be read; the rest is then empty.
	Error string `json:"error,omitempty"`
	// Peers and Blobs are its table's (blob, peer) entries and blobs.
	Peers int `json:"peers"`
	Blobs int `json:"blobs"`
	// Holders, with --digest, are the peers it lists for the blob.
	Holders []trackerPeer `json:"holders,omitempty"`
}

// clusterStatusCmd runs `shoalctl cluster status`: the origin cluster as
// the admin API's node sees it, the owners of a blob with --digest, and
// what each tracker given with --tracker holds (with --digest, the agents
// and origins it lists for the blob).
func clusterStatusCmd(ctx context.Context, c client, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("cluster status", flag.ContinueOnError)
	dgst := fs.String("digest", "", "a blob digest: list its owners, and the peers the trackers know for it")
	var trackers listFlag
	if v := os.Getenv("SHOAL_TRACKERS"); v != "" {
		_ = trackers.Set(v)
	}
	fs.Var(&trackers, "tracker", "a tracker's HTTP address (its --metrics-listen, e.g. http://127.0.0.1:7081), repeatable ($SHOAL_TRACKERS, comma-separated)")
	asJSON := fs.Bool("json", false, "print one JSON object: the admin API's answer and the trackers'")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	q := ""
	if *dgst != "" {
		q = "?digest=" + url.QueryEscape(*dgst)
	}
	var st adminapi.ClusterStatus
	if _, err := c.getJSON(ctx, adminapi.ClusterPath+q, &st); err != nil {
		return err
	}
	states := make([]trackerState, len(trackers))
	for i, t := range trackers {
		states[i] = readTracker(ctx, c.http, t, *dgst)
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Origin   adminapi.ClusterStatus `json:"origin"`
			Trackers []trackerState         `json:"trackers"`
		}{st, states})
	}
	_, err := io.WriteString(out, describeCluster(c.base, st, states))
	return err
}

// readTracker reads a tracker's table size from its metrics and, for a
// digest, its peer listing.
func readTracker(ctx context.Context, hc *http.Client, base, dgst string) trackerState {
	base = strings.TrimRight(base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ts := trackerState{URL: base}
	m, err := promscrape.Scrape(ctx, nil, base+"/metrics")
	if err != nil {
		ts.Error = err.Error()
		return ts
	}
	ts.Peers, ts.Blobs = int(m.Sum("shoal_tracker_peers")), int(m.Sum("shoal_tracker_blobs"))
	if dgst == "" {
		return ts
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/peers?digest="+url.QueryEscape(dgst), nil)
	if err != nil {
		ts.Error = err.Error()
		return ts
	}
	resp, err := hc.Do(req)
	if err != nil {
		ts.Error = err.Error()
		return ts
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		ts.Error = fmt.Sprintf("GET /debug/peers: %s: %s", resp.Status, strings.TrimSpace(string(body)))
		return ts
	}
	if err := json.Unmarshal(body, &ts.Holders); err != nil {
		ts.Error = fmt.Sprintf("reading /debug/peers: %v", err)
	}
	return ts
}

// describeCluster puts the cluster's state in a few lines for a person.
func describeCluster(admin string, st adminapi.ClusterStatus, trackers []trackerState) string {
	var b strings.Builder
	if !st.Seeder {
		fmt.Fprintf(&b, "the origin at %s runs no seeder: it is in no cluster, and agents proxy its blobs without P2P\n", admin)
		fmt.Fprintln(&b, "  (start it with --tracker ADDR, docs/p2p.md)")
	} else {
		fmt.Fprintf(&b, "origin cluster as %s sees it (admin API %s): %d members, %d owners per blob\n", st.Node, admin, len(st.Members), st.Replicas)
		for _, m := range st.Members {
			seeder := m.Seeder
			if seeder == "" {
				seeder = "no seeder"
			}
			fmt.Fprintf(&b, "  %-20s seeder %s\n", m.Name, seeder)
		}
	}
	if st.Digest != "" && st.Seeder {
		names := make([]string, len(st.Owners))
		for i, o := range st.Owners {
			names[i] = o.Name
		}
		fmt.Fprintf(&b, "owners of %s, best first: %s\n", st.Digest, strings.Join(names, ", "))
	}
	if len(st.Trackers) == 0 {
		fmt.Fprintln(&b, "trackers: none configured on this origin")
	} else {
		fmt.Fprintf(&b, "trackers this origin announces to: %s\n", strings.Join(st.Trackers, ", "))
	}
	if len(trackers) == 0 && len(st.Trackers) > 0 {
		fmt.Fprintln(&b, "  (give their HTTP addresses with --tracker URL to see the agents they know)")
	}
	for _, t := range trackers {
		if t.Error != "" {
			fmt.Fprintf(&b, "  %s: unreachable: %s\n", t.URL, t.Error)
			continue
		}
		fmt.Fprintf(&b, "  %s: %d peer entries over %d blobs\n", t.URL, t.Peers, t.Blobs)
		if st.Digest == "" {
			continue
		}
		if len(t.Holders) == 0 {
			fmt.Fprintf(&b, "    no peer holds %s\n", st.Digest)
		}
		for _, p := range t.Holders {
			role, state := "agent", fmt.Sprintf("%d pieces", p.Pieces)
			if p.Origin {
				role = "origin"
			}
			if p.Complete {
				state = "complete"
			}
			fmt.Fprintf(&b, "    %-6s %-20s %-21s %s\n", role, p.ID, p.Addr, state)
		}
	}
	return b.String()
}

// preheatTimeout bounds a preheat: its owners read every layer of the
// image from storage, minutes for a large image on a slow store.
const preheatTimeout = 30 * time.Minute

// errPreheat makes shoalctl exit 1 after preheat printed which blobs
// failed.
var errPreheat = errors.New("preheat incomplete")

// preheat runs `shoalctl preheat IMAGE`: the origin resolves the image and
// has the owners of its blobs load them and their metainfo; with --agents,
// those agents then fetch the blobs into their caches (prefetchOnAgents).
func preheat(ctx context.Context, c client, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("preheat", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer")
	agentList := fs.String("agents", "", "comma-separated mirror addresses (host:port or URL) of agents that fetch the image's blobs into their cache after the owners have them")
	pullUser := fs.String("pull-user", os.Getenv("SHOAL_PULL_USER"), "user the agents fetch as, when the image is not public ($SHOAL_PULL_USER); the password comes from $SHOAL_PULL_PASSWORD")
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		// IMAGE first, flags after, as people type it.
		args = append(args[1:len(args):len(args)], args[0])
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 1 {
		return usageError{"preheat: give one image: shoalctl preheat REPOSITORY[:TAG|@DIGEST]"}
	}
	repo, ref := splitImage(fs.Arg(0))
	q := url.Values{"repository": {repo}, "reference": {ref}}
	c.http = &http.Client{Timeout: preheatTimeout, Transport: c.http.Transport}
	var res adminapi.PreheatResult
	body, err := c.callJSON(ctx, http.MethodPost, adminapi.PreheatPath+"?"+q.Encode(), &res)
	if err != nil {
		return err
	}
	failed := 0
	var total int64
	for _, bl := range res.Blobs {
		total += bl.Size
		if bl.Error != "" {
			failed++
			continue
		}
		for _, o := range bl.Owners {
			if o.Error != "" {
				failed++
				break
			}
		}
	}
	var agents []agentPrefetch
	if *agentList != "" {
		agents = prefetchOnAgents(ctx, c.http, strings.Split(*agentList, ","), *pullUser, os.Getenv("SHOAL_PULL_PASSWORD"), res)
	}
	if *asJSON {
		if agents != nil {
			body, err = json.Marshal(struct {
				Preheat json.RawMessage `json:"preheat"`
				Agents  []agentPrefetch `json:"agents"`
			}{body, agents})
			if err != nil {
				return err
			}
		}
		if _, err := out.Write(body); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "preheated %s:%s (%s): %d blobs, %s, on their owners\n", res.Repository, res.Reference, res.Manifest, len(res.Blobs), humanBytes(total))
		for _, bl := range res.Blobs {
			fmt.Fprintf(out, "  %s %10s  ", shortDigest(bl.Digest), humanBytes(bl.Size))
			if bl.Error != "" {
				fmt.Fprintf(out, "failed: %s\n", bl.Error)
				continue
			}
			parts := make([]string, len(bl.Owners))
			for i, o := range bl.Owners {
				name := o.Name
				if name == "" {
					name = "this origin"
				}
				parts[i] = name + " ready"
				if o.Error != "" {
					parts[i] = name + " failed: " + o.Error
				}
			}
			fmt.Fprintln(out, strings.Join(parts, ", "))
		}
	}
	agentsFailed := 0
	if !*asJSON {
		agentsFailed = printPrefetches(out, agents)
	} else {
		for _, a := range agents {
			if len(a.Failed) > 0 {
				agentsFailed++
			}
		}
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "shoalctl: %d of %d blobs were not preheated on every owner; a pull still works, reading them from storage\n", failed, len(res.Blobs))
	}
	if agentsFailed > 0 {
		fmt.Fprintf(os.Stderr, "shoalctl: %d of %d agents did not fetch every blob; their pulls still work, from peers and seeders\n", agentsFailed, len(agents))
	}
	if failed > 0 || agentsFailed > 0 {
		return errPreheat
	}
	return nil
}

// splitImage splits [REGISTRY/]REPOSITORY[:TAG|@DIGEST] into the
// repository on the origin and the reference (latest when none). A first
// component with a dot or a port, or localhost, is a registry host, which
// the admin API does not need.
func splitImage(image string) (repo, ref string) {
	if first, rest, ok := strings.Cut(image, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		image = rest
	}
	if r, d, ok := strings.Cut(image, "@"); ok {
		return r, d
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i], image[i+1:]
	}
	return image, "latest"
}

// shortDigest is the algorithm and the first 12 hex digits.
func shortDigest(d string) string {
	if alg, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return alg + ":" + hex[:12]
	}
	return d
}
