package swarm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// Retrying a seeder's RESOURCE_EXHAUSTED: an origin limits how often one
// client may make it compute the metainfo of a blob nobody is pulling
// (seeder coldMetainfoRate) and says when to come back (a RetryInfo). The
// agent waits that long rather than failing the client's pull, a few
// times, never longer than maxMetainfoRetryWait at once.
const (
	metainfoRetries      = 3
	maxMetainfoRetryWait = 5 * time.Second
)

// fetchMetainfo gets d's metainfo from the seeders (askSeeders), and when
// a round fails with a seeder asking to retry later, tries again after
// the shortest delay asked for.
func (s *Swarm) fetchMetainfo(ctx context.Context, d digest.Digest) (*metainfo.Metainfo, []string, error) {
	for attempt := 0; ; attempt++ {
		m, owners, err := s.askSeeders(ctx, d)
		if err == nil || attempt == metainfoRetries {
			return m, owners, err
		}
		wait, ok := retryDelay(err)
		if !ok {
			return nil, nil, err
		}
		s.log.Debug("seeders asked to retry for metainfo", "digest", d, "wait", wait, "attempt", attempt+1, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("%w (while waiting %s to retry)", err, wait)
		case <-t.C:
		}
	}
}

// retryDelay returns the shortest delay a RESOURCE_EXHAUSTED among err's
// errors (one per seeder asked) asked for in its RetryInfo, at most
// maxMetainfoRetryWait; false when none did.
func retryDelay(err error) (time.Duration, bool) {
	var errs []error
	queue := []error{err}
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			queue = append(queue, u.Unwrap()...)
			continue
		case interface{ GRPCStatus() *status.Status }:
			errs = append(errs, e)
			continue
		}
		if next := errors.Unwrap(e); next != nil {
			queue = append(queue, next)
		}
	}
	shortest, found := maxMetainfoRetryWait, false
	for _, e := range errs {
		st := status.Convert(e)
		if st.Code() != codes.ResourceExhausted {
			continue
		}
		for _, det := range st.Details() {
			if ri, ok := det.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().IsValid() {
				shortest, found = min(shortest, max(ri.GetRetryDelay().AsDuration(), 0)), true
			}
		}
	}
	return shortest, found
}
