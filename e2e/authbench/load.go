package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// loadResult is one timed run of concurrent clients.
type loadResult struct {
	requests  int
	elapsed   time.Duration
	latencies []time.Duration // every request's, sorted
}

func (r loadResult) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// quantile returns the q-quantile (0 < q <= 1) of the latencies, nearest rank.
func (r loadResult) quantile(q float64) time.Duration {
	return quantile(r.latencies, q)
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// load runs clients goroutines, client i repeating newReq(ctx, i) until d has
// passed, and times every request to the end of its body. Any answer but
// 200 fails the run: a server that is fast because it refuses must not
// score.
func load(parent context.Context, hc *http.Client, clients int, d time.Duration, newReq func(ctx context.Context, client int) (*http.Request, error)) (loadResult, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var (
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	start := time.Now()
	deadline := start.Add(d)
	for i := range clients {
		wg.Go(func() {
			var mine []time.Duration
			defer func() {
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				if err := once(ctx, hc, newReq, i); err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					return
				}
				mine = append(mine, time.Since(t0))
			}
		})
	}
	wg.Wait()
	res := loadResult{requests: len(all), elapsed: time.Since(start), latencies: all}
	if firstErr != nil {
		return res, firstErr
	}
	if err := parent.Err(); err != nil {
		return res, err
	}
	if res.requests == 0 {
		return res, fmt.Errorf("no request completed in %s", res.elapsed)
	}
	slices.Sort(res.latencies)
	return res, nil
}

// once sends one request and reads its body, which must come with a 200.
func once(ctx context.Context, hc *http.Client, newReq func(context.Context, int) (*http.Request, error), client int) error {
	req, err := newReq(ctx, client)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, b)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("%s %s: reading the body: %w", req.Method, req.URL.Path, err)
	}
	return nil
}
