// Package hdfs starts a real HDFS (Hadoop's MiniDFSCluster: one namenode and
// several datanodes in one JVM, all on 127.0.0.1) for tests, and drives
// faults in it: datanode restarts, namenode outages.
//
// The JVM side is MiniHdfs.java, run by Java 17's single-file source
// launcher; its jars come from Maven Central through pom.xml and are cached
// under the repository's .cache/hdfs-jars (or the user cache directory when
// the tests do not run inside the repository). Both files are embedded in
// this package so that a test binary finds them wherever it runs.
//
// Start a cluster once per test package, in TestMain:
//
//	var cluster *hdfs.Cluster
//	var clusterErr error
//
//	func TestMain(m *testing.M) {
//		cluster, clusterErr = hdfs.Start(context.Background(), hdfs.DefaultOptions())
//		code := m.Run()
//		if cluster != nil {
//			cluster.Stop()
//		}
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		c := hdfs.Require(t, cluster, clusterErr) // fails under CI=true, skips otherwise
//		...
//	}
package hdfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
)

// Options configures a cluster. DefaultOptions returns working values.
type Options struct {
	// BaseDir holds the namenode's and datanodes' storage and the JVM log
	// (hdfs.log). Empty means a new temporary directory, removed by Stop.
	BaseDir string
	// Port is the namenode's RPC port on 127.0.0.1. Zero lets the namenode
	// pick a free one; it is kept across StopNameNode/StartNameNode.
	Port int
	// DataNodes is the number of datanodes. Three, so that a replication of
	// two survives one datanode restart with a spare node to re-replicate to.
	DataNodes int
	// Replication is dfs.replication, the default for files created without
	// an explicit factor (the Go client uses the server default).
	Replication int
	// BlockSize is dfs.blocksize in bytes; zero keeps Hadoop's 128 MiB.
	BlockSize int64
	// Heap is the JVM's -Xmx. One namenode and three datanodes with test
	// data fit in 1g; the machine is shared with other test processes.
	Heap string
	// StartTimeout bounds the time from launching the JVM to READY. A cold
	// start on two busy cores takes 20-40 s; fetching the jars is not counted.
	StartTimeout time.Duration
	// CommandTimeout bounds one fault command (restart-datanode, ...).
	CommandTimeout time.Duration
	// LogLevel is the level of Hadoop's log in <BaseDir>/hdfs.log: error,
	// warn (default: quiet unless something goes wrong), info, debug.
	LogLevel string
	// JarDir overrides where the Hadoop jars are cached. Empty means
	// <repo>/.cache/hdfs-jars when run inside the repository, else
	// <user cache dir>/shoal/hdfs-jars. SHOAL_HDFS_JARS overrides both.
	JarDir string
}

// DefaultOptions returns the options the tests use: three datanodes,
// replication two, a namenode port picked by the system.
func DefaultOptions() Options {
	return Options{
		DataNodes:      3,
		Replication:    2,
		Heap:           "1g",
		StartTimeout:   3 * time.Minute,
		CommandTimeout: 2 * time.Minute,
	}
}

// Cluster is a running MiniDFSCluster. Its methods are safe for concurrent
// use; fault commands run one at a time.
type Cluster struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	log      *os.File
	baseDir  string
	ownsBase bool
	namenode string
	// namenodeHTTP is written by readStdout before it reports READY, and
	// read only after Start has received that report.
	namenodeHTTP string
	cmdTO        time.Duration

	replies chan string   // protocol lines after READY
	exited  chan struct{} // closed when the JVM has exited
	waitErr error         // set before exited is closed

	mu      sync.Mutex // serializes commands and Stop
	stopped bool
}

// Start fetches the Hadoop jars if they are not cached yet, launches the
// JVM and returns once the namenode and every datanode are up. It returns
// an error if java or mvn are missing or the cluster does not come up in
// time; the error includes the end of the JVM's log.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	def := DefaultOptions()
	if opts.DataNodes <= 0 {
		opts.DataNodes = def.DataNodes
	}
	if opts.Replication <= 0 {
		opts.Replication = def.Replication
	}
	if opts.Heap == "" {
		opts.Heap = def.Heap
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = def.StartTimeout
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = def.CommandTimeout
	}

	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("start test HDFS: java (17 or later) is needed to run MiniDFSCluster: %w", err)
	}
	jars, err := fetchJars(ctx, opts.JarDir)
	if err != nil {
		return nil, err
	}

	c := &Cluster{
		baseDir: opts.BaseDir,
		cmdTO:   opts.CommandTimeout,
		replies: make(chan string, 16),
		exited:  make(chan struct{}),
	}
	if c.baseDir == "" {
		c.baseDir, err = os.MkdirTemp("", "shoal-minihdfs-")
		if err != nil {
			return nil, fmt.Errorf("start test HDFS: create base dir: %w", err)
		}
		c.ownsBase = true
	} else if err := os.MkdirAll(c.baseDir, 0o755); err != nil {
		return nil, fmt.Errorf("start test HDFS: create base dir: %w", err)
	}
	c.log, err = os.Create(filepath.Join(c.baseDir, "hdfs.log"))
	if err != nil {
		c.cleanup()
		return nil, fmt.Errorf("start test HDFS: create log: %w", err)
	}

	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "warn"
	}
	args := []string{
		"-Xmx" + opts.Heap,
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=" + logLevel,
		"-cp", filepath.Join(jars, "*"),
		filepath.Join(jars, "MiniHdfs.java"),
		"--base", filepath.Join(c.baseDir, "dfs"),
		"--port", fmt.Sprint(opts.Port),
		"--datanodes", fmt.Sprint(opts.DataNodes),
		"--replication", fmt.Sprint(opts.Replication),
	}
	if opts.BlockSize > 0 {
		args = append(args, "--block-size", fmt.Sprint(opts.BlockSize))
	}
	// Not CommandContext: ctx bounds the start only, the cluster outlives it.
	c.cmd = exec.Command(java, args...)
	c.cmd.Dir = c.baseDir
	c.cmd.Stderr = c.log
	// Own process group: a Ctrl-C in the terminal reaches the test binary,
	// which stops the cluster, instead of killing the JVM mid-test.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		c.cleanup()
		return nil, fmt.Errorf("start test HDFS: %w", err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("start test HDFS: %w", err)
	}
	if err := c.cmd.Start(); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("start test HDFS: launch %s: %w", java, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()

	ready := make(chan string, 1)
	go c.readStdout(stdout, ready)

	timer := time.NewTimer(opts.StartTimeout)
	defer timer.Stop()
	select {
	case nn := <-ready:
		c.namenode = nn
		return c, nil
	case <-c.exited:
		err = fmt.Errorf("start test HDFS: JVM exited before READY (%v)", c.waitErr)
	case <-timer.C:
		err = fmt.Errorf("start test HDFS: not READY after %s", opts.StartTimeout)
	case <-ctx.Done():
		err = fmt.Errorf("start test HDFS: %w", ctx.Err())
	}
	tail := c.logTail()
	c.kill()
	c.cleanup()
	return nil, fmt.Errorf("%w; end of %s:\n%s", err, c.log.Name(), tail)
}

// readStdout parses the protocol: NAMENODE= then READY go to ready (as the
// address), everything after goes to c.replies.
func (c *Cluster) readStdout(r io.Reader, ready chan<- string) {
	sc := bufio.NewScanner(r)
	var nn string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "NAMENODE="):
			nn = strings.TrimPrefix(line, "NAMENODE=")
		case strings.HasPrefix(line, "NAMENODE_HTTP="):
			c.namenodeHTTP = strings.TrimPrefix(line, "NAMENODE_HTTP=")
		case line == "READY":
			ready <- nn
		default:
			select {
			case c.replies <- line:
			default:
				// Nobody waits for it (a command that timed out); drop it
				// rather than block the JVM's stdout.
			}
		}
	}
}

// NameNode returns the namenode's RPC address, "127.0.0.1:PORT".
func (c *Cluster) NameNode() string { return c.namenode }

// NameNodeHTTP returns the address of the namenode's web server as it was
// at start, "127.0.0.1:PORT"; its /jmx serves the namenode's metrics (RPC
// call counts per method). After StartNameNode the port may differ.
func (c *Cluster) NameNodeHTTP() string { return c.namenodeHTTP }

// PID returns the process id of the JVM that runs the cluster.
func (c *Cluster) PID() int { return c.cmd.Process.Pid }

// URL returns the storage URL of a root path on this cluster, as the origin
// takes it: hdfs://127.0.0.1:PORT/root.
func (c *Cluster) URL(root string) string {
	return "hdfs://" + c.namenode + "/" + strings.TrimPrefix(root, "/")
}

// BaseDir returns the directory holding the cluster's storage and its log.
func (c *Cluster) BaseDir() string { return c.baseDir }

// RestartDataNode stops datanode i (0-based) and starts it again on the same
// ports, returning once it has registered with the namenode. The restarted
// node moves to the end of MiniDFSCluster's list, so the index of every node
// after i drops by one.
func (c *Cluster) RestartDataNode(i int) error {
	return c.command(fmt.Sprintf("restart-datanode %d", i))
}

// StopNameNode stops the namenode; datanodes keep running and clients get
// connection errors until StartNameNode.
func (c *Cluster) StopNameNode() error { return c.command("stop-namenode") }

// StartNameNode starts the namenode again on the same port and returns once
// it has left safe mode, so that writes work again.
func (c *Cluster) StartNameNode() error { return c.command("start-namenode") }

func (c *Cluster) command(cmd string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("test HDFS %s: cluster is stopped", cmd)
	}
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return fmt.Errorf("test HDFS %s: send command: %w", cmd, err)
	}
	timer := time.NewTimer(c.cmdTO)
	defer timer.Stop()
	for {
		select {
		case line := <-c.replies:
			switch {
			case line == "OK "+cmd:
				return nil
			case strings.HasPrefix(line, "ERR "+cmd):
				return fmt.Errorf("test HDFS %s: %s (log: %s)", cmd, strings.TrimPrefix(line, "ERR "), c.log.Name())
			}
			// A late answer to an earlier, timed-out command: skip it.
		case <-c.exited:
			return fmt.Errorf("test HDFS %s: JVM exited (%v); end of log:\n%s", cmd, c.waitErr, c.logTail())
		case <-timer.C:
			return fmt.Errorf("test HDFS %s: no answer after %s (log: %s)", cmd, c.cmdTO, c.log.Name())
		}
	}
}

// Stop shuts the cluster down, kills the JVM if it does not exit within 30
// seconds, and removes the base directory if Start created it. It is safe
// to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	_, _ = io.WriteString(c.stdin, "shutdown\n")
	_ = c.stdin.Close()
	var err error
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		err = errors.New("stop test HDFS: JVM did not exit 30 s after shutdown; killed")
		c.kill()
	}
	c.cleanup()
	return err
}

// kill ends the JVM by PID and waits for it.
func (c *Cluster) kill() {
	if c.cmd.Process != nil {
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

func (c *Cluster) cleanup() {
	if c.log != nil {
		_ = c.log.Close()
	}
	if c.ownsBase {
		_ = os.RemoveAll(c.baseDir)
	}
}

// logTail returns the last lines of the JVM's log, for error messages.
func (c *Cluster) logTail() string {
	b, err := os.ReadFile(c.log.Name())
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// Require returns c when Start succeeded. Otherwise it ends the test through
// testenv.Unavailable: a failure under CI=true (a missing HDFS must not pass
// silently in CI), a skip elsewhere (a laptop without Java).
func Require(t testing.TB, c *Cluster, startErr error) *Cluster {
	t.Helper()
	if startErr == nil && c != nil {
		return c
	}
	if startErr == nil {
		startErr = errors.New("no cluster was started")
	}
	testenv.Unavailable(t, "test HDFS: %v", startErr)
	return nil
}
