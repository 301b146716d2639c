package hdfs

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/colinmarc/hdfs/v2"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// Java exceptions that mean "the namenode cannot serve this now", as opposed
// to "this request is wrong": safe mode after a restart, a standby namenode,
// a namenode asking the client to come back later.
var unavailableExceptions = map[string]bool{
	"org.apache.hadoop.hdfs.server.namenode.SafeModeException":         true,
	"org.apache.hadoop.ipc.StandbyException":                           true,
	"org.apache.hadoop.ipc.RetriableException":                         true,
	"org.apache.hadoop.ipc.RetryException":                             true,
	"org.apache.hadoop.hdfs.server.namenode.NotReplicatedYetException": true,
}

// IsUnavailable reports whether err says that HDFS could not be reached or
// could not serve the request now (a namenode down, in safe mode or not
// answering), so that a caller answers 503 and retries later rather than
// reporting a missing or bad path. Errors from this driver that satisfy it
// also match errors.Is(err, storage.ErrUnavailable).
func IsUnavailable(err error) bool {
	return errors.Is(err, storage.ErrUnavailable)
}

// isConnFailure reports whether err came from a broken or refused connection
// rather than from an answer of HDFS.
func isConnFailure(err error) bool {
	var nerr net.Error
	switch {
	case errors.As(err, &nerr),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, io.EOF),
		errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, net.ErrClosed):
		return true
	}
	// The client reports that every namenode failed with fmt.Errorf and %s,
	// which drops the cause: the message is all there is to match.
	return strings.Contains(err.Error(), "no available namenodes")
}

func isUnavailable(err error) bool {
	if errors.Is(err, hdfs.ErrReplicating) {
		// Datanodes did not confirm the minimum replication within the
		// close-retry budget: HDFS is too slow or short of datanodes.
		return true
	}
	var rerr hdfs.Error
	if errors.As(err, &rerr) {
		return unavailableExceptions[rerr.Exception()]
	}
	return isConnFailure(err)
}

// mapErr turns an error of the HDFS client into the storage contract's
// errors. op names what the driver was doing, p is the storage path (not the
// HDFS one) so that messages match what the caller asked for.
//
// Not-found errors become storage.PathNotFoundError, returned bare because
// callers (and the reference test suite) test its type directly. Outages
// wrap storage.ErrUnavailable and name HDFS and the namenodes.
func (d *Driver) mapErr(op, p string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrNotExist):
		return storage.PathNotFoundError{Path: p, DriverName: DriverName}
	case isUnavailable(err):
		return fmt.Errorf("hdfs %s %s: HDFS (namenodes %s) unavailable: %w: %w",
			op, p, strings.Join(d.cfg.NameNodes, ","), storage.ErrUnavailable, err)
	default:
		return fmt.Errorf("hdfs %s %s: %w", op, p, err)
	}
}
