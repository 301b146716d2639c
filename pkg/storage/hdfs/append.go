package hdfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"

	"github.com/colinmarc/hdfs/v2"
)

// Waiting for replicas before an append: how long at most, and the first
// pause between checks. Datanodes report a finalized replica within a
// heartbeat (3 s by default); past 5 s a replica is more likely lost than
// late, and the append goes ahead with the replicas the namenode knows.
const (
	replicaWait      = 5 * time.Second
	replicaFirstPoll = 20 * time.Millisecond
)

// appendFile opens full for appending and returns its current size.
//
// The library appends to the last block without bumping its generation
// stamp, as the Java client does through updateBlockForPipeline. A replica
// the namenode did not know about when the append started (its datanode's
// report was still in flight after the previous close) is then left behind
// with the old length and the same stamp; the namenode later accepts it as
// a replica of the longer block, and the next append fails with "Corrupted
// replica" (in tests, about one append in fifteen). The driver closes that
// window: before appending to a partial last block, it waits until the
// namenode lists as many replicas of it as the file's replication.
func appendFile(c *client, full string) (*hdfs.FileWriter, int64, error) {
	info, err := c.Stat(full)
	if errors.Is(err, os.ErrNotExist) {
		w, err := replaceFile(c, full)
		return w, 0, err
	}
	if err != nil {
		return nil, 0, err
	}
	if info.IsDir() {
		return nil, 0, fmt.Errorf("append to %s: is a directory", full)
	}
	if info.Size()%c.defaults.BlockSize != 0 {
		if err := waitReplicated(c, full, info); err != nil {
			return nil, 0, err
		}
	}
	w, err := c.Append(full)
	return w, info.Size(), err
}

// waitReplicated waits until the last block of the file has its full
// replication on the namenode, or replicaWait has passed.
func waitReplicated(c *client, full string, info os.FileInfo) error {
	st, ok := info.Sys().(interface{ GetBlockReplication() uint32 })
	if !ok {
		return nil
	}
	want := int(st.GetBlockReplication())
	deadline := time.Now().Add(replicaWait)
	delay := replicaFirstPoll
	for {
		n, err := lastBlockReplicas(c, full, info.Size())
		if err != nil || n < 0 || n >= want || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

// lastBlockReplicas returns how many datanodes the namenode lists for the
// last block of a file of the given size, or -1 if it cannot tell.
//
// The library has no call for block locations: it fetches them, privately,
// when a FileReader first reads. So this reads the last byte and looks at
// the reader's block list by reflection. Reflection only inspects; if a
// future library version renames the field, this returns -1 and appends
// proceed without waiting (TestRepeatedAppends would then show the race).
func lastBlockReplicas(c *client, full string, size int64) (int, error) {
	f, err := c.Open(full)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 1), size-1); err != nil && err != io.EOF {
		return 0, err
	}
	blocks := reflect.ValueOf(f).Elem().FieldByName("blocks")
	if !blocks.IsValid() || blocks.Kind() != reflect.Slice || blocks.Len() == 0 {
		return -1, nil
	}
	last := blocks.Index(blocks.Len() - 1)
	if last.Kind() != reflect.Pointer || last.IsNil() {
		return -1, nil
	}
	locs := last.Elem().FieldByName("Locs")
	if !locs.IsValid() || locs.Kind() != reflect.Slice {
		return -1, nil
	}
	return locs.Len(), nil
}
