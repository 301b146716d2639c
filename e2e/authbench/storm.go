package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
)

// stormRepo needs credentials under the mission's rules; its image has
// -layers layers.
const (
	stormRepo      = "path2/storm"
	stormLayerSize = 256 << 10
)

// storm is one client's burst of blob requests through the agent.
type storm struct {
	name        string
	digests     []string // request i asks for digests[i % len]
	concurrency int
}

// stormResult is what the origin saw of one storm, and what it cost the agent.
type stormResult struct {
	took     time.Duration
	windows  int
	heads    float64 // blob HEADs at the origin: the agent's authorization calls
	other    float64 // every other registry request the origin got
	metainfo float64 // GetMetainfo calls at the origin's seeder
	p50      time.Duration
	agentCPU time.Duration // the agent's CPU per request
}

// stormBench sends storms of blob requests with one credential through the
// agent and counts the authorization calls the origin gets for them.
func stormBench(ctx context.Context, env *cluster) error {
	c := env.c
	layers := make([]*streamLayer, c.layers)
	digests := make([]string, c.layers)
	for i := range layers {
		var err error
		if layers[i], err = newStreamLayer(uint64(100+i), stormLayerSize); err != nil {
			return err
		}
		digests[i] = layers[i].digest.String()
	}
	if err := pushImage(ctx, env.origin.URL(), stormRepo, "latest", layers...); err != nil {
		return err
	}
	blobURL := func(d string) string { return env.agent.URL() + "/v2/" + stormRepo + "/blobs/" + d }
	if err := expectStatus(ctx, blobURL(digests[0]), http.StatusUnauthorized); err != nil {
		return fmt.Errorf("the agent must refuse an anonymous pull of %s: %w", stormRepo, err)
	}
	hc := &http.Client{Transport: newTransport(c.stormConcurrency)}
	// Every layer goes into the agent's cache first (through the swarm), so
	// the storms measure authorization, not downloads.
	tok, err := fetchToken(ctx, hc, env.origin.URL(), stormRepo)
	if err != nil {
		return err
	}
	for _, d := range digests {
		if err := getBlob(ctx, hc, blobURL(d), tok); err != nil {
			return fmt.Errorf("pulling %s into the agent's cache: %w", d, err)
		}
	}

	storms := []storm{
		{name: fmt.Sprintf("one layer, %d at a time", c.stormConcurrency), digests: digests[:1], concurrency: c.stormConcurrency},
		{name: "one layer, one at a time", digests: digests[:1], concurrency: 1},
		{name: fmt.Sprintf("%d layers of one image, %d at a time", c.layers, c.stormConcurrency), digests: digests, concurrency: c.stormConcurrency},
	}
	t := &table{
		title: fmt.Sprintf("Agent: origin authorization calls under a storm of %d blob requests from one client (authTTL %s)", c.stormRequests, c.authTTL),
		header: []string{"storm", "took s", "authTTL windows", "origin blob HEADs", "HEADs per window",
			"other origin requests", "p50 ms", "agent CPU µs/req", "goal", "result"},
	}
	for _, s := range storms {
		// A new token is a new credential to the agent: its cache of the
		// origin's answers starts cold for every storm.
		tok, err := fetchToken(ctx, hc, env.origin.URL(), stormRepo)
		if err != nil {
			return err
		}
		r, err := runStorm(ctx, env, hc, s, tok, blobURL)
		if err != nil {
			return fmt.Errorf("storm %q: %w", s.name, err)
		}
		slog.Info("storm", "name", s.name, "took", r.took.Round(time.Millisecond), "heads", r.heads, "windows", r.windows)
		t.add(s.name, num(r.took.Seconds()), fmt.Sprint(r.windows), fmt.Sprint(r.heads), num(r.heads/float64(r.windows)),
			fmt.Sprint(r.other), num(float64(r.p50)/float64(time.Millisecond)), num(float64(r.agentCPU)/float64(time.Microsecond)),
			"≤ 1 per window", verdict(r.heads <= float64(r.windows)))
		if r.metainfo > 0 {
			t.note("%s: the origin's seeder also got %v GetMetainfo calls", s.name, r.metainfo)
		}
	}
	t.note("each storm: %d GETs of blobs of %s with one bearer token (a new one per storm, so the agent's answers cache starts cold), spread evenly over %d authTTL windows in bursts of the storm's concurrency; the layers were in the agent's cache before",
		c.stormRequests, stormRepo, c.stormWindows)
	t.note("origin blob HEADs: shoal_origin_http_requests_total{handler=\"blob\",method=\"HEAD\"} over the storm; other origin requests: the rest of that counter (manifests, blob GETs, ...)")
	t.note("agent CPU per request: utime+stime of the agent over the storm; a capability the agent already holds for a blob is not verified again when a client's GET brings the same one")
	t.note("the goal is per (credential, repository): for a blob it holds complete and the origin placed in the repository (here by the pulls that filled the cache, under another token), the agent reuses the origin's yes to the credential for the repository, so the first request of a window asks about its blob and the rest of the storm rides on that answer")
	return t.print(c.markdown)
}

// runStorm sends s.stormRequests requests for s's blobs through the agent,
// in bursts of s.concurrency spread over the storm's windows, and reads the
// origin's counters before and after.
func runStorm(ctx context.Context, env *cluster, hc *http.Client, s storm, tok string, blobURL func(string) string) (stormResult, error) {
	c := env.c
	originBefore, err := takeSample(ctx, env.origin.Server)
	if err != nil {
		return stormResult{}, err
	}
	agentBefore, err := takeSample(ctx, env.agent.Server)
	if err != nil {
		return stormResult{}, err
	}
	span := time.Duration(float64(c.authTTL) * float64(c.stormWindows) * 0.95)
	var (
		mu        sync.Mutex
		latencies []time.Duration
		firstErr  error
	)
	start := time.Now()
	sent := 0
	for _, at := range stormSchedule(c.stormRequests, s.concurrency, span) {
		select {
		case <-ctx.Done():
			return stormResult{}, ctx.Err()
		case <-time.After(time.Until(start.Add(at))):
		}
		n := min(s.concurrency, c.stormRequests-sent)
		var wg sync.WaitGroup
		for j := range n {
			d := s.digests[(sent+j)%len(s.digests)]
			wg.Go(func() {
				t0 := time.Now()
				err := getBlob(ctx, hc, blobURL(d), tok)
				took := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				latencies = append(latencies, took)
				if err != nil && firstErr == nil {
					firstErr = err
				}
			})
		}
		wg.Wait()
		sent += n
		if firstErr != nil {
			return stormResult{}, firstErr
		}
	}
	took := time.Since(start)
	agentAfter, err := takeSample(ctx, env.agent.Server)
	if err != nil {
		return stormResult{}, err
	}
	originAfter, err := takeSample(ctx, env.origin.Server)
	if err != nil {
		return stormResult{}, err
	}
	heads := originAfter.since(originBefore, "shoal_origin_http_requests_total", "handler", "blob", "method", http.MethodHead)
	slices.Sort(latencies)
	return stormResult{
		took:     took,
		windows:  windowsSpanned(took, c.authTTL),
		heads:    heads,
		other:    originAfter.since(originBefore, "shoal_origin_http_requests_total") - heads,
		metainfo: originAfter.since(originBefore, "shoal_origin_seeder_metainfo_requests_total"),
		p50:      quantile(latencies, 0.5),
		agentCPU: (agentAfter.cpu - agentBefore.cpu) / time.Duration(c.stormRequests),
	}, nil
}

// stormSchedule returns when each burst of a storm of n requests, at most
// concurrency at a time, starts: evenly spread from 0 to before span.
func stormSchedule(n, concurrency int, span time.Duration) []time.Duration {
	bursts := (n + concurrency - 1) / concurrency
	at := make([]time.Duration, bursts)
	for b := range at {
		at[b] = span * time.Duration(b) / time.Duration(bursts)
	}
	return at
}

// windowsSpanned is how many authTTL windows a storm of length d touches at
// most: a cached answer lasts ttl, so d needs at least this many.
func windowsSpanned(d, ttl time.Duration) int {
	return max(1, int(math.Ceil(float64(d)/float64(ttl))))
}

// getBlob GETs a blob through the agent with a bearer token and reads it.
func getBlob(ctx context.Context, hc *http.Client, url, tok string) error {
	return once(ctx, hc, func(ctx context.Context, _ int) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return req, err
	}, 0)
}
