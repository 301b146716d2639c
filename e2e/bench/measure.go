package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// requestRate runs clients goroutines that repeat newReq until d has passed and returns the
// number of successful requests and the time they took. Any failed request fails the measurement: a server that is
// fast because it answers errors must not score.
func requestRate(ctx context.Context, hc *http.Client, clients int, d time.Duration, newReq func(context.Context) (*http.Request, error)) (int64, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		ok       atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				req, err := newReq(ctx)
				if err != nil {
					fail(err)
					return
				}
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err))
					}
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					fail(fmt.Errorf("%s %s: status %d", req.Method, req.URL.Path, resp.StatusCode))
					return
				}
				if err != nil {
					fail(fmt.Errorf("%s %s: reading body: %w", req.Method, req.URL.Path, err))
					return
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, elapsed, firstErr
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return 0, elapsed, err
	}
	return ok.Load(), elapsed, nil
}
