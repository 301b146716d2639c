package hdfs

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/colinmarc/hdfs/v2"
)

// closer fails its first n Close calls with err.
type closer struct {
	n     int
	err   error
	calls int
}

func (c *closer) Close() error {
	c.calls++
	if c.calls <= c.n {
		return c.err
	}
	return nil
}

// The namenode refuses to complete a file until its last block's replicas
// are reported; the library returns ErrReplicating (in an os.PathError) and
// the driver must close again rather than fail the write.
func TestCloseFileRetriesWhileReplicating(t *testing.T) {
	replicating := &os.PathError{Op: "create", Path: "/f", Err: hdfs.ErrReplicating}

	c := &closer{n: 3, err: replicating}
	if err := closeRetrying(c, time.Microsecond); err != nil || c.calls != 4 {
		t.Fatalf("closeRetrying after 3 ErrReplicating = %v in %d calls; want nil in 4", err, c.calls)
	}

	c = &closer{n: 1000, err: replicating}
	err := closeRetrying(c, time.Microsecond)
	if !hdfs.IsErrReplicating(err) || c.calls != closeAttempts {
		t.Fatalf("closeRetrying while always replicating = %v in %d calls; want ErrReplicating after %d", err, c.calls, closeAttempts)
	}
	if !isUnavailable(err) {
		t.Fatalf("ErrReplicating after the retry budget is not reported as unavailable")
	}

	other := errors.New("broken pipe to datanode")
	c = &closer{n: 1, err: other}
	if err := closeRetrying(c, time.Microsecond); err != other || c.calls != 1 {
		t.Fatalf("closeRetrying with a non-replication error = %v in %d calls; want it returned at once", err, c.calls)
	}
}
