package hdfs

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestClusterLifecycle starts a cluster and drives every fault command: the
// namenode must come back on the same port, and a datanode restart must
// succeed. Storage behaviour on top of this is tested by pkg/storage/hdfs.
func TestClusterLifecycle(t *testing.T) {
	start := time.Now()
	c, err := Start(context.Background(), DefaultOptions())
	c = Require(t, c, err)
	t.Logf("cluster up in %s at %s", time.Since(start).Round(time.Millisecond), c.NameNode())
	defer func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	}()

	dial := func() error {
		conn, err := net.DialTimeout("tcp", c.NameNode(), time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("namenode %s not reachable after READY: %v", c.NameNode(), err)
	}
	resp, err := http.Get("http://" + c.NameNodeHTTP() + "/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo")
	if err != nil {
		t.Fatalf("namenode web server at %s: %v", c.NameNodeHTTP(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("namenode /jmx at %s: %s", c.NameNodeHTTP(), resp.Status)
	}
	if c.PID() <= 0 {
		t.Fatalf("PID() = %d", c.PID())
	}

	if err := c.StopNameNode(); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err == nil {
		t.Fatalf("namenode %s still accepts connections after StopNameNode", c.NameNode())
	}
	if err := c.StartNameNode(); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Fatalf("namenode not back on %s after StartNameNode: %v", c.NameNode(), err)
	}

	if err := c.RestartDataNode(1); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartDataNode(7); err == nil {
		t.Fatal("RestartDataNode(7) on a 3-datanode cluster succeeded, want an error")
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.StopNameNode(); err == nil {
		t.Fatal("command after Stop succeeded, want an error")
	}
}
