package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// ErrRunning is returned when a run is started while this node runs one.
var ErrRunning = errors.New("gc is already running on this node")

// RunnerOptions are a Runner's collaborators; every field may be zero.
type RunnerOptions struct {
	// Holder identifies this node in the lease; default hostname:pid.
	Holder string
	// Deleter removes tags and manifests; default StorageDeleter.
	Deleter Deleter
	Logger  *slog.Logger
	// Registerer receives the shoal_gc_* metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
	// LeaseSettle is how long Acquire waits before reading the lease back;
	// default 2s, comfortably above one storage round trip.
	LeaseSettle time.Duration
}

// RunOptions adjust one run.
type RunOptions struct {
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
}

// Runner runs retention, mark and sweep, and the upload purge, one run at
// a time per node and, through the lease, per cluster.
type Runner struct {
	drv     storage.Driver
	cfg     Config
	deleter Deleter
	holder  string
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	settle  time.Duration

	mu       sync.Mutex
	running  bool
	cancel   context.CancelCauseFunc
	progress Progress
	last     *Report
}

// NewRunner validates cfg and returns a Runner over drv.
func NewRunner(drv storage.Driver, cfg Config, opts RunnerOptions) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Runner{drv: drv, cfg: cfg, deleter: opts.Deleter, holder: opts.Holder, log: opts.Logger,
		now: opts.Now, settle: opts.LeaseSettle, metrics: newMetrics(opts.Registerer)}
	if r.deleter == nil {
		r.deleter = StorageDeleter{Driver: drv}
	}
	if r.holder == "" {
		host, _ := os.Hostname()
		r.holder = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("component", "gc", "holder", r.holder)
	if r.now == nil {
		r.now = time.Now
	}
	if r.settle == 0 {
		r.settle = 2 * time.Second
	}
	r.progress.Phase = PhaseIdle
	return r, nil
}

// Status returns the current progress and this node's last report.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Status{Running: r.running, Progress: r.progress, Last: r.last}
}

// LastReport reads the report of the last run of any node from storage.
func (r *Runner) LastReport(ctx context.Context) (*Report, error) {
	b, err := r.drv.GetContent(ctx, reportPath)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading last gc report: %w", err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("decoding last gc report: %w", err)
	}
	return &rep, nil
}

// Cancel stops the run in progress, if any.
func (r *Runner) Cancel() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		r.cancel(errors.New("gc canceled"))
	}
}

func (r *Runner) begin(ctx context.Context, ro RunOptions) (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return nil, ErrRunning
	}
	r.running = true
	ctx, r.cancel = context.WithCancelCause(ctx)
	r.progress = Progress{Phase: PhaseLease, DryRun: ro.DryRun, StartedAt: r.now()}
	return ctx, nil
}

func (r *Runner) end(rep *Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running = false
	r.cancel(nil)
	r.cancel = nil
	r.progress.Phase = PhaseIdle
	if rep != nil {
		r.last = rep
	}
}

func (r *Runner) update(f func(*Progress)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.progress)
}

// Start begins a run in the background and returns once it has begun. The
// run outlives ctx's cancellation (an admin request ends before the run
// does); Cancel stops it.
func (r *Runner) Start(ctx context.Context, ro RunOptions) error {
	runCtx, err := r.begin(context.WithoutCancel(ctx), ro)
	if err != nil {
		return err
	}
	go func() {
		if _, err := r.run(runCtx, ro); err != nil && !errors.Is(err, ErrLeaseHeld) {
			r.log.Error("gc run failed", "err", err)
		}
	}()
	return nil
}

// Run runs one collection and returns its report. It returns ErrLeaseHeld
// (with a nil report) when another node is collecting.
func (r *Runner) Run(ctx context.Context, ro RunOptions) (*Report, error) {
	runCtx, err := r.begin(ctx, ro)
	if err != nil {
		return nil, err
	}
	return r.run(runCtx, ro)
}

// Schedule runs a collection every Interval until ctx ends. Every origin
// node may call it: the lease lets one node collect, the others skip.
func (r *Runner) Schedule(ctx context.Context) {
	if r.cfg.Interval <= 0 {
		return
	}
	t := time.NewTicker(time.Duration(r.cfg.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := r.Run(ctx, RunOptions{DryRun: r.cfg.DryRun})
		switch {
		case err == nil:
		case errors.Is(err, ErrLeaseHeld), errors.Is(err, ErrRunning):
			r.log.Info("scheduled gc skipped", "reason", err)
		default:
			r.log.Error("scheduled gc failed", "err", err)
		}
	}
}

func (r *Runner) run(ctx context.Context, ro RunOptions) (rep *Report, err error) {
	defer func() { r.end(rep) }()
	cd := &countingDriver{Driver: r.drv}
	ttl := time.Duration(r.cfg.LeaseTTL)
	lease := NewLease(cd, r.holder, ttl, r.settle, r.now)
	if err := lease.Acquire(ctx); err != nil {
		r.metrics.runs.WithLabelValues(resultOf(err)).Inc()
		return nil, err
	}
	r.metrics.running.Set(1)
	defer r.metrics.running.Set(0)

	// Renew well before expiry; a failed renewal stops the run, and the
	// sweep re-checks the lease before each batch in any case.
	renewCtx, stopRenew := context.WithCancel(ctx)
	var renewed sync.WaitGroup
	renewed.Add(1)
	go func() {
		defer renewed.Done()
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-t.C:
				if err := lease.Renew(renewCtx); err != nil && renewCtx.Err() == nil {
					r.log.Error("gc lease renewal failed; stopping the run", "err", err)
					r.mu.Lock()
					if r.cancel != nil {
						r.cancel(err)
					}
					r.mu.Unlock()
					return
				}
			}
		}
	}()

	rep = &Report{Holder: r.holder, Token: lease.Token(), DryRun: ro.DryRun, StartedAt: r.now()}
	log := r.log.With("token", rep.Token, "dryRun", ro.DryRun)
	log.Info("gc started")
	err = (&collection{r: r, drv: cd, lease: lease, rep: rep, dry: ro.DryRun, log: log}).run(ctx)
	stopRenew()
	renewed.Wait()
	if err != nil && context.Cause(ctx) != nil && !errors.Is(err, ErrLeaseLost) {
		err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
	}

	rep.FinishedAt = r.now()
	if err != nil {
		rep.Error = err.Error()
	}
	rep.StorageCalls = cd.calls()
	// The report and the release use a fresh context: a canceled run still
	// records what it did and frees the lease for the next node.
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if b, merr := json.MarshalIndent(rep, "", "  "); merr == nil {
		if werr := r.drv.PutContent(bg, reportPath, b); werr != nil {
			log.Warn("saving gc report failed", "err", werr)
		}
	}
	if rerr := lease.Release(bg); rerr != nil {
		log.Warn("releasing gc lease failed; it expires by itself", "err", rerr)
	}
	r.metrics.runs.WithLabelValues(resultOf(err)).Inc()
	r.metrics.duration.Observe(rep.FinishedAt.Sub(rep.StartedAt).Seconds())
	r.metrics.record(rep)
	if err == nil {
		r.metrics.lastSuccess.Set(float64(rep.FinishedAt.Unix()))
	}
	log.Info("gc finished", "err", err, "tags", len(rep.Tags), "manifests", len(rep.Manifests),
		"blobs", len(rep.Blobs), "bytes", rep.BytesFreed, "spared", len(rep.BlobsSpared),
		"uploads", len(rep.Uploads), "duration", rep.FinishedAt.Sub(rep.StartedAt))
	return rep, err
}

func resultOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrLeaseHeld):
		return "lease_held"
	case errors.Is(err, ErrLeaseLost):
		return "lease_lost"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "error"
}
