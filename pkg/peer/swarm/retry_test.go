package swarm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func exhausted(t *testing.T, wait time.Duration) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "too many cold metainfo requests").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// round is how askSeeders reports a failed round: one wrapped error per
// seeder, joined, wrapped once more.
func round(errs ...error) error {
	var wrapped []error
	for i, e := range errs {
		wrapped = append(wrapped, fmt.Errorf("seeder 10.0.0.%d:7003: %w", i+1, e))
	}
	return fmt.Errorf("getting metainfo of sha256:abc: %w", errors.Join(wrapped...))
}

func TestRetryDelay(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want time.Duration
		ok   bool
	}{
		{"one seeder asks for 1.5s", round(exhausted(t, 1500*time.Millisecond)), 1500 * time.Millisecond, true},
		{"the shortest of two", round(exhausted(t, 3*time.Second), exhausted(t, 700*time.Millisecond)), 700 * time.Millisecond, true},
		{"an unreachable seeder and one asking", round(status.Error(codes.Unavailable, "connection refused"), exhausted(t, time.Second)), time.Second, true},
		{"capped", round(exhausted(t, time.Hour)), maxMetainfoRetryWait, true},
		{"exhausted without RetryInfo (stream limits)", round(status.Error(codes.ResourceExhausted, "at its limit of streams")), 0, false},
		{"not found", round(status.Error(codes.NotFound, "blob unknown")), 0, false},
		{"denied", round(status.Error(codes.PermissionDenied, "no capability")), 0, false},
		{"no seeders", errors.New("no origin seeders known to take metainfo from"), 0, false},
	} {
		got, ok := retryDelay(c.err)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%s: retryDelay = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}
