package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/shoal-dev/shoal/e2e/procstat"
)

const manifestRepo, blobRepo, tag = "bench/manifest", "bench/blob", "latest"

// bench takes figures on Shoal and the reference side by side and collects the report rows.
type bench struct {
	ctx     context.Context
	c       config
	shoal   *server
	ref     *server
	clients map[*server]*registryClient
	rows    []row
}

// measureAll takes every selected figure on both servers, alternating servers figure by figure so
// slow drift of the shared machine (other jobs, page cache) hits both columns alike. A figure that
// fails on one server is recorded as an error and the run goes on to the next figure.
func measureAll(ctx context.Context, c config, shoal, ref *server) ([]row, error) {
	b := &bench{ctx: ctx, c: c, shoal: shoal, ref: ref, clients: make(map[*server]*registryClient, 2)}
	for _, s := range b.pair() {
		rc, err := newRegistryClient(s.URL(), newTransport(max(c.clients, c.fanout)))
		if err != nil {
			return nil, err
		}
		b.clients[s] = rc
	}
	if c.runs("manifests") {
		if err := b.manifests(); err != nil {
			return b.rows, err
		}
	}
	if err := ctx.Err(); err != nil {
		return b.rows, fmt.Errorf("interrupted: %w", err)
	}
	if c.runs("blobs") {
		if err := b.blobs(); err != nil {
			return b.rows, err
		}
	}
	if n := countErrors(b.rows); n > 0 {
		return b.rows, fmt.Errorf("%d figure(s) could not be measured", n)
	}
	return b.rows, nil
}

func (b *bench) pair() []*server { return []*server{b.shoal, b.ref} }

// ratio is the target of a figure measured as a ratio: at least want
// against registry:2; against the origin with its limits off, at least
// 0.95 (issue 13: the deadlines and caps cost at most 5%).
func (b *bench) ratio(want float64) target {
	if b.c.against == "limits-off" {
		return target{targetRatioAtLst, 0.95}
	}
	return target{targetRatioAtLst, want}
}

// bothRounds measures one figure on each server rounds times, alternating which server goes
// first, and records each server's median as a row, and each round's ratio. A round measures
// the two servers back to back, so its ratio compares them under the same machine load; the
// row's ratio is the median of the rounds' ratios, which load that drifts from round to round
// (other jobs on a shared machine) moves far less than the ratio of the two medians.
func (b *bench) bothRounds(rounds int, figure, unit string, t target, each func(s *server) (float64, error)) {
	b.pairedRounds(rounds, figure, unit, t, func(order []*server) (map[*server]float64, error) {
		got := make(map[*server]float64, len(order))
		for _, s := range order {
			if err := b.ctx.Err(); err != nil {
				return nil, err
			}
			v, err := each(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			got[s] = v
		}
		return got, nil
	})
}

// pairedRounds is bothRounds with the round left to round, which measures
// both servers, order[0] first, and returns each one's figure.
func (b *bench) pairedRounds(rounds int, figure, unit string, t target, round func(order []*server) (map[*server]float64, error)) {
	r := row{figure: figure, unit: unit, target: t}
	values := map[*server][]float64{}
	for i := range rounds {
		order := b.pair()
		if i%2 == 1 {
			order = []*server{b.ref, b.shoal}
		}
		if err := b.ctx.Err(); err != nil {
			r.err = err
			break
		}
		got, err := round(order)
		if err != nil {
			r.err = err
			break
		}
		for _, s := range order {
			slog.Info("measured", "figure", figure, "server", s.name, "round", i+1, unit, formatValue(got[s]))
			values[s] = append(values[s], got[s])
		}
		if ref := got[b.ref]; ref > 0 {
			r.rounds = append(r.rounds, got[b.shoal]/ref)
		}
	}
	if r.err == nil {
		r.shoal, r.ref = median(values[b.shoal]), median(values[b.ref])
	}
	b.rows = append(b.rows, r)
}

func (b *bench) both(figure, unit string, t target, each func(s *server) (float64, error)) {
	b.bothRounds(1, figure, unit, t, each)
}

// lastFailed tells whether the figure just measured failed.
func (b *bench) lastFailed() bool { return b.rows[len(b.rows)-1].err != nil }

// manifests measures manifest HEAD and GET rates by tag and by digest.
func (b *bench) manifests() error {
	ctx, c := b.ctx, b.c
	manifestDigest := map[*server]string{}
	for _, s := range b.pair() {
		d, err := b.clients[s].pushManifest(ctx, manifestRepo, tag)
		if err != nil {
			return fmt.Errorf("setting up manifest on %s: %w", s.name, err)
		}
		manifestDigest[s] = d
	}
	if manifestDigest[b.shoal] != manifestDigest[b.ref] {
		return fmt.Errorf("the same manifest got digests %s (%s) and %s (%s)", manifestDigest[b.shoal], b.shoal.name, manifestDigest[b.ref], b.ref.name)
	}

	// Server CPU per request is reported beside each rate: unlike the rate it barely depends on
	// what else the shared machine is doing, or on the load generator's own CPU.
	var cpuRows []row
	// The load generator shares the two cores with the server; its own CPU per request shows
	// how much of a rate it could be limiting (one figure for all manifest measurements).
	clientPerReq := map[*server][]float64{}
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		for _, by := range []string{"tag", "digest"} {
			figure := fmt.Sprintf("manifest %s by %s, %d clients", method, by, c.clients)
			cpuPerReq := map[*server][]float64{}
			requests := func(s *server) func(context.Context) (*http.Request, error) {
				ref := tag
				if by == "digest" {
					ref = manifestDigest[s]
				}
				u := b.clients[s].url("/v2/" + manifestRepo + "/manifests/" + ref)
				return func(ctx context.Context) (*http.Request, error) {
					req, err := http.NewRequestWithContext(ctx, method, u, nil)
					if err == nil {
						req.Header.Set("Accept", manifestAccept)
					}
					return req, err
				}
			}
			b.pairedRounds(c.rounds, figure, "req/s", b.ratio(2), func(order []*server) (map[*server]float64, error) {
				var (
					n               map[*server]int64
					elapsed, srvCPU map[*server]time.Duration
					selfCPU         map[*server]time.Duration
				)
				n, elapsed = map[*server]int64{}, map[*server]time.Duration{}
				srvCPU, selfCPU = map[*server]time.Duration{}, map[*server]time.Duration{}
				for _, s := range order {
					newReq := requests(s)
					if _, _, err := requestRate(ctx, b.clients[s].http, c.clients, c.warmup, newReq); err != nil {
						return nil, fmt.Errorf("%s: warm-up: %w", s.name, err)
					}
				}
				// Without slices each server is measured in one block of
				// c.duration; with them the servers take turns, a slice
				// each, until each has had c.duration.
				slice := c.duration
				if c.slice > 0 {
					slice = c.slice
				}
				for elapsed[order[0]] < c.duration || elapsed[order[1]] < c.duration {
					for _, s := range order {
						if elapsed[s] >= c.duration {
							continue
						}
						newReq := requests(s)
						var (
							got  int64
							took time.Duration
							self time.Duration
						)
						cpu, err := procstat.CPUDuring(s.PID(), func() error {
							var err error
							self, err = procstat.CPUDuring(os.Getpid(), func() error {
								got, took, err = requestRate(ctx, b.clients[s].http, c.clients, min(slice, c.duration-elapsed[s]), newReq)
								return err
							})
							return err
						})
						if err != nil {
							return nil, fmt.Errorf("%s: %w", s.name, err)
						}
						n[s] += got
						elapsed[s] += took
						srvCPU[s] += cpu
						selfCPU[s] += self
					}
				}
				rates := make(map[*server]float64, len(order))
				for _, s := range order {
					if n[s] == 0 {
						return nil, fmt.Errorf("%s: no request completed in %s", s.name, elapsed[s])
					}
					cpuPerReq[s] = append(cpuPerReq[s], float64(srvCPU[s].Microseconds())/float64(n[s]))
					clientPerReq[s] = append(clientPerReq[s], float64(selfCPU[s].Microseconds())/float64(n[s]))
					rates[s] = float64(n[s]) / elapsed[s].Seconds()
				}
				return rates, nil
			})
			if !b.lastFailed() {
				cpuRows = append(cpuRows, row{figure: fmt.Sprintf("manifest %s by %s: server CPU per request", method, by), unit: "µs",
					shoal: median(cpuPerReq[b.shoal]), ref: median(cpuPerReq[b.ref])})
			}
		}
	}
	b.rows = append(b.rows, cpuRows...)
	if len(clientPerReq[b.shoal]) > 0 && len(clientPerReq[b.ref]) > 0 {
		b.rows = append(b.rows, row{figure: "manifest requests: load generator CPU per request", unit: "µs",
			shoal: median(clientPerReq[b.shoal]), ref: median(clientPerReq[b.ref])})
	}
	return nil
}

// blobs measures the chunked push, the single-client GET and the fan-out GET with the RSS peak.
func (b *bench) blobs() error {
	ctx, c := b.ctx, b.c
	blobSize, chunk := c.blobMiB*mib, c.chunkMiB*mib
	digests := make([]string, c.pushReps)
	for i := range digests {
		d, err := blobDigest(uint64(1000+i), blobSize)
		if err != nil {
			return err
		}
		digests[i] = d
	}

	// Server CPU per GiB moved goes beside the throughput figures: it shows the cost of each
	// server's data path (sendfile or userland copies, hashing, fsync) even when other jobs on
	// the machine blur the throughput.
	var cpuGiBRows []row
	cpuPerGiB := map[*server]float64{}
	addCPURow := func(figure string) {
		if !b.lastFailed() {
			cpuGiBRows = append(cpuGiBRows, row{figure: figure + ": server CPU per GiB", unit: "ms", shoal: cpuPerGiB[b.shoal], ref: cpuPerGiB[b.ref]})
		}
	}
	defer func() { b.rows = append(b.rows, cpuGiBRows...) }()
	gib := func(bytes int64) float64 { return float64(bytes) / (1 << 30) }

	// Pushes alternate between the servers blob by blob (each round pushes the next blob to both)
	// and the median push counts, so a burst of disk traffic from other jobs hits one push, not
	// one server.
	cpuTotal := map[*server]time.Duration{}
	pushed := map[*server]int{}
	pushFigure := fmt.Sprintf("%d MiB chunked push, %d MiB PATCHes", c.blobMiB, c.chunkMiB)
	b.bothRounds(len(digests), pushFigure, "MiB/s", b.ratio(1), func(s *server) (float64, error) {
		i := pushed[s]
		start := time.Now()
		cpu, err := procstat.CPUDuring(s.PID(), func() error {
			return b.clients[s].pushChunked(ctx, blobRepo, uint64(1000+i), blobSize, chunk, digests[i])
		})
		if err != nil {
			return 0, fmt.Errorf("push %d: %w", i+1, err)
		}
		took := time.Since(start)
		pushed[s]++
		cpuTotal[s] += cpu
		cpuPerGiB[s] = float64(cpuTotal[s].Milliseconds()) / gib(blobSize*int64(pushed[s]))
		return float64(blobSize) / mib / took.Seconds(), nil
	})
	if b.lastFailed() {
		return fmt.Errorf("no blob to GET: %w", b.rows[len(b.rows)-1].err)
	}
	addCPURow("chunked push")

	blob := digests[0]
	for _, s := range b.pair() {
		if err := b.clients[s].verifyBlob(ctx, blobRepo, blob, blobSize); err != nil {
			return fmt.Errorf("%s: verifying the pushed blob: %w", s.name, err)
		}
	}
	clear(cpuTotal)
	got := map[*server]int{}
	b.bothRounds(c.getReps, fmt.Sprintf("%d MiB blob GET, one client", c.blobMiB), "MiB/s", b.ratio(1), func(s *server) (float64, error) {
		start := time.Now()
		cpu, err := procstat.CPUDuring(s.PID(), func() error {
			_, err := b.clients[s].getBlob(ctx, blobRepo, blob)
			return err
		})
		if err != nil {
			return 0, err
		}
		took := time.Since(start)
		got[s]++
		cpuTotal[s] += cpu
		cpuPerGiB[s] = float64(cpuTotal[s].Milliseconds()) / gib(blobSize*int64(got[s]))
		return float64(blobSize) / mib / took.Seconds(), nil
	})
	addCPURow("blob GET, one client")

	// The fan-out yields several figures per server from one run: peak RSS, aggregate throughput,
	// lifetime peak RSS and CPU per GiB.
	fanThroughput := map[*server]float64{}
	fanHWM := map[*server]float64{}
	b.both(fmt.Sprintf("%d concurrent GETs of it: peak server RSS", c.fanout), "MiB", target{targetBelow, c.rssTargetMiB}, func(s *server) (float64, error) {
		sampler := procstat.StartSampler([]int{s.PID()}, 10*time.Millisecond)
		start := time.Now()
		cpu, getErr := procstat.CPUDuring(s.PID(), func() error {
			errs := make(chan error, c.fanout)
			for range c.fanout {
				go func() {
					_, err := b.clients[s].getBlob(ctx, blobRepo, blob)
					errs <- err
				}()
			}
			var firstErr error
			for range c.fanout {
				if err := <-errs; err != nil && firstErr == nil {
					firstErr = err
				}
			}
			return firstErr
		})
		elapsed := time.Since(start)
		peak := sampler.Stop()[0]
		if getErr != nil {
			return 0, getErr
		}
		if err := sampler.Err(); err != nil {
			return 0, err
		}
		st, err := procstat.ReadStatus(s.PID())
		if err != nil {
			return 0, err
		}
		fanThroughput[s] = float64(blobSize*int64(c.fanout)) / mib / elapsed.Seconds()
		fanHWM[s] = float64(st.HWM) / mib
		cpuPerGiB[s] = float64(cpu.Milliseconds()) / gib(blobSize*int64(c.fanout))
		return float64(peak) / mib, nil
	})
	if !b.lastFailed() {
		addCPURow(fmt.Sprintf("%d concurrent GETs", c.fanout))
		b.rows = append(b.rows,
			row{figure: fmt.Sprintf("%d concurrent GETs of it: aggregate", c.fanout), unit: "MiB/s", shoal: fanThroughput[b.shoal], ref: fanThroughput[b.ref]},
			row{figure: "server VmHWM (lifetime peak RSS) after all figures", unit: "MiB", shoal: fanHWM[b.shoal], ref: fanHWM[b.ref]},
		)
	}
	return nil
}
