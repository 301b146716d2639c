// Package hdfsorigin tests origin processes on a real HDFS: the OCI
// conformance suite, upload sessions shared by two origins (one of them
// killed mid-chunk), pulls across a datanode restart, and a namenode outage.
//
// One MiniDFSCluster (three datanodes, replication two) serves the whole
// package; each test works under its own root directory in it. Tests that
// stop a namenode or restart a datanode leave the cluster running and
// healthy for the next one.
package hdfsorigin

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/hdfs"
	"github.com/shoal-dev/shoal/e2e/testenv"
)

// testBlockSize is the cluster's dfs.blocksize. Smaller than Hadoop's
// 128 MiB so that a 256 MiB blob spans many blocks spread over all three
// datanodes (a datanode restart then hits every pull), and so that an
// upload in flight needs the namenode for a new block within a few MiB.
const testBlockSize = 16 << 20

var (
	cluster    *hdfs.Cluster
	clusterErr error
)

func TestMain(m *testing.M) {
	start := time.Now()
	opts := hdfs.DefaultOptions()
	opts.BlockSize = testBlockSize
	cluster, clusterErr = hdfs.Start(context.Background(), opts)
	if clusterErr == nil {
		fmt.Fprintf(os.Stderr, "hdfsorigin: MiniDFSCluster up at %s in %s\n", cluster.NameNode(), time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "hdfsorigin: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// testCluster returns the package's cluster, or ends the test as
// testenv.Unavailable (a failure under CI=true) when it did not start.
func testCluster(t *testing.T) *hdfs.Cluster {
	t.Helper()
	return hdfs.Require(t, cluster, clusterErr)
}

// startOrigin starts an origin on root in the cluster; it is stopped when
// the test ends.
func startOrigin(t *testing.T, c *hdfs.Cluster, root string) *testenv.Server {
	t.Helper()
	return testenv.Origin(t, c.URL(root))
}

// phases logs how long each phase of a test took, so that a slow run shows
// where its time went. It asserts nothing about time.
type phases struct {
	t     *testing.T
	start time.Time
	last  time.Time
}

func newPhases(t *testing.T) *phases {
	now := time.Now()
	return &phases{t: t, start: now, last: now}
}

func (p *phases) done(what string) {
	p.t.Helper()
	now := time.Now()
	p.t.Logf("phase %-40s %8s (total %s)", what, now.Sub(p.last).Round(time.Millisecond), now.Sub(p.start).Round(time.Millisecond))
	p.last = now
}
