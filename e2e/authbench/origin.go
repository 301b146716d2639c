package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

// manifestRepo needs credentials under the mission's rules.
const manifestRepo = "path2/bench"

// manifestAccept is what dockerd sends when pulling.
const manifestAccept = "application/vnd.docker.distribution.manifest.v2+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"

// The goal of issue 9: auth on at most 5% slower than off.
const maxSlowdown = 0.05

// clientAuth is one way of reaching the manifest: an origin, and what
// each client puts in its requests.
type clientAuth struct {
	name      string
	server    *testenv.Server
	hc        *http.Client
	authorize func(r *http.Request, client int)

	rate, p50, p99, cpuPerReq []float64 // one per round
}

// originBench measures manifest GETs by tag with many clients on an open
// origin and on an origin with access control, in rounds that rotate the
// order of the three ways of asking, and prints the medians.
func originBench(ctx context.Context, env *cluster) error {
	c := env.c
	open, err := env.startOrigin(ctx, "origin-open", false)
	if err != nil {
		return err
	}
	authed, err := env.startOrigin(ctx, "origin-auth", true)
	if err != nil {
		return err
	}
	layer, err := newStreamLayer(1, 4096)
	if err != nil {
		return err
	}
	for _, s := range []*testenv.Server{open, authed} {
		if err := pushImage(ctx, s.URL(), manifestRepo, "latest", layer); err != nil {
			return err
		}
	}
	manifestURL := func(s *testenv.Server) string { return s.URL() + "/v2/" + manifestRepo + "/manifests/latest" }
	if err := expectStatus(ctx, manifestURL(authed), http.StatusUnauthorized); err != nil {
		return fmt.Errorf("the auth origin must refuse an anonymous pull of %s: %w", manifestRepo, err)
	}

	tokens := make([]string, c.clients)
	setupClient := &http.Client{Transport: newTransport(1)}
	for i := range tokens {
		if tokens[i], err = fetchToken(ctx, setupClient, authed.URL(), manifestRepo); err != nil {
			return err
		}
	}
	ways := []*clientAuth{
		{name: "auth off (open origin, anonymous)", server: open, authorize: func(*http.Request, int) {}},
		{name: "auth on, a bearer token per client", server: authed, authorize: func(r *http.Request, i int) {
			r.Header.Set("Authorization", "Bearer "+tokens[i])
		}},
		{name: "auth on, Basic credentials every request", server: authed, authorize: func(r *http.Request, _ int) {
			r.SetBasicAuth(puller, pullerPassword)
		}},
	}
	for _, w := range ways {
		w.hc = &http.Client{Transport: newTransport(c.clients)}
	}
	for round := range c.rounds {
		for k := range ways {
			w := ways[(k+round)%len(ways)]
			if err := w.measure(ctx, c, manifestURL(w.server)); err != nil {
				return fmt.Errorf("%s, round %d: %w", w.name, round+1, err)
			}
			slog.Info("measured", "figure", "manifest GET", "way", w.name, "round", round+1,
				"req/s", num(w.rate[round]), "p50_ms", num(w.p50[round]))
		}
	}
	return originTable(c, ways).print(c.markdown)
}

// measure runs one warm-up and one timed round of manifest GETs.
func (w *clientAuth) measure(ctx context.Context, c config, url string) error {
	newReq := func(ctx context.Context, client int) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", manifestAccept)
		w.authorize(req, client)
		return req, nil
	}
	if _, err := load(ctx, w.hc, c.clients, c.warmup, newReq); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var res loadResult
	cpu, err := procstat.CPUDuring(w.server.PID(), func() error {
		var err error
		res, err = load(ctx, w.hc, c.clients, c.duration, newReq)
		return err
	})
	if err != nil {
		return err
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	w.rate = append(w.rate, res.rate())
	w.p50 = append(w.p50, ms(res.quantile(0.5)))
	w.p99 = append(w.p99, ms(res.quantile(0.99)))
	w.cpuPerReq = append(w.cpuPerReq, float64(cpu.Microseconds())/float64(res.requests))
	return nil
}

func originTable(c config, ways []*clientAuth) *table {
	t := &table{
		title: fmt.Sprintf("Origin: manifest GET by tag, %d clients, auth on vs off (median of %d rounds of %s)", c.clients, c.rounds, c.duration),
		header: []string{"configuration", "req/s", "p50 ms", "p99 ms", "origin CPU µs/req",
			"req/s on/off", "p50 on/off", "goal", "result"},
	}
	off := ways[0]
	offRate, offP50 := median(off.rate), median(off.p50)
	for i, w := range ways {
		rate, p50 := median(w.rate), median(w.p50)
		ratios, goal, result := []string{"-", "-"}, "-", "-"
		if i > 0 {
			rr, pr := rate/offRate, p50/offP50
			ratios = []string{fmt.Sprintf("%.3f", rr), fmt.Sprintf("%.3f", pr)}
			goal = fmt.Sprintf("≥ %.2f and ≤ %.2f", 1-maxSlowdown, 1+maxSlowdown)
			result = verdict(rr >= 1-maxSlowdown && pr <= 1+maxSlowdown)
		}
		t.add(append([]string{w.name, num(rate), num(p50), num(median(w.p99)), num(median(w.cpuPerReq))}, append(ratios, goal, result)...)...)
	}
	for _, w := range ways {
		t.note("%s: req/s by round %s", w.name, joinNums(w.rate))
	}
	t.note("the goal reads \"at most 5%% slower\" for both: requests per second on/off ≥ 0.95 and p50 on/off ≤ 1.05; origin CPU per request is the steadier figure on a shared machine")
	return t
}

func joinNums(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = num(x)
	}
	return strings.Join(s, ", ")
}

// expectStatus GETs url anonymously and checks the status.
func expectStatus(ctx context.Context, url string, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("GET %s: %s, want %d", url, resp.Status, want)
	}
	return nil
}
