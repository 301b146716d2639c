package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/adminapi"
	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/peer/mirror"
)

// agentPrefetch is what one agent did with an image's blobs.
type agentPrefetch struct {
	Agent string `json:"agent"`
	// Fetched and Cached count the blobs the agent fetched now and those
	// it held already; Failed names the others with the agent's reason.
	Fetched int               `json:"fetched"`
	Cached  int               `json:"cached"`
	Bytes   int64             `json:"bytes"`
	Failed  map[string]string `json:"failed,omitempty"`
	Seconds float64           `json:"seconds"`
}

// prefetchOnAgents has every agent fetch every blob of the preheated image
// into its piece store, the agents at once (they form one swarm, as a
// rollout would) and each agent's blobs one after another. The bytes stay
// on the agents: shoalctl only sees each blob's answer.
func prefetchOnAgents(ctx context.Context, hc *http.Client, agents []string, user, password string, res adminapi.PreheatResult) []agentPrefetch {
	out := make([]agentPrefetch, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() {
			start := time.Now()
			p := agentPrefetch{Agent: a}
			for _, bl := range res.Blobs {
				r, err := prefetchBlob(ctx, hc, a, user, password, res.Repository, bl.Digest)
				switch {
				case err != nil:
					if p.Failed == nil {
						p.Failed = map[string]string{}
					}
					p.Failed[bl.Digest] = err.Error()
				case r.Cached:
					p.Cached++
				default:
					p.Fetched++
					p.Bytes += r.Size
				}
			}
			p.Seconds = time.Since(start).Seconds()
			out[i] = p
		})
	}
	wg.Wait()
	return out
}

// agentURL is an agent's mirror address as given: host:port, or a URL.
func agentURL(agent string) string {
	if strings.Contains(agent, "://") {
		return strings.TrimSuffix(agent, "/")
	}
	return "http://" + agent
}

// prefetchBlob asks one agent to fetch one blob.
func prefetchBlob(ctx context.Context, hc *http.Client, agent, user, password, repo, blob string) (mirror.PrefetchResult, error) {
	d, err := digest.Parse(blob)
	if err != nil {
		return mirror.PrefetchResult{}, fmt.Errorf("the origin named blob %q: %w", blob, err)
	}
	u := agentURL(agent) + mirror.PrefetchPrefix + (&url.URL{Path: repo}).EscapedPath() + "/blobs/" + d.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return mirror.PrefetchResult{}, err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return mirror.PrefetchResult{}, fmt.Errorf("%w (is the agent's mirror listening there?)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return mirror.PrefetchResult{}, fmt.Errorf("reading the agent's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb ociapi.ErrorBody
		if json.Unmarshal(body, &eb) == nil && len(eb.Errors) > 0 {
			return mirror.PrefetchResult{}, fmt.Errorf("%s: %s %s", resp.Status, eb.Errors[0].Code, eb.Errors[0].Message)
		}
		return mirror.PrefetchResult{}, fmt.Errorf("%s (an agent older than prefetch answers 404)", resp.Status)
	}
	var r mirror.PrefetchResult
	if err := json.Unmarshal(body, &r); err != nil {
		return mirror.PrefetchResult{}, fmt.Errorf("reading the agent's answer %q: %w", body, err)
	}
	return r, nil
}

// printPrefetches prints a line per agent and returns how many failed.
func printPrefetches(out io.Writer, ps []agentPrefetch) int {
	failed := 0
	for _, p := range ps {
		if len(p.Failed) > 0 {
			failed++
			fmt.Fprintf(out, "agent %s: %d of %d blobs failed\n", p.Agent, len(p.Failed), len(p.Failed)+p.Fetched+p.Cached)
			for d, why := range p.Failed {
				fmt.Fprintf(out, "  %s failed: %s\n", shortDigest(d), why)
			}
			continue
		}
		fmt.Fprintf(out, "agent %s: %d blobs fetched (%s), %d held already, in %.1fs\n", p.Agent, p.Fetched, humanBytes(p.Bytes), p.Cached, p.Seconds)
	}
	return failed
}
