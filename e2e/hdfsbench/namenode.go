package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/e2e/hdfs"
)

// nameNodeJMX reads the namenode's per-method RPC counters from its HTTP
// server's /jmx (bean RpcDetailedActivityForPort<rpc port>).
//
// e2e/hdfs does not report the namenode's HTTP port (the cluster picks a
// free one), so findNameNodeJMX finds it: the
// JVM is the process whose command line names the cluster's base
// directory, and of its listening ports the namenode's is the one whose
// /jmx has that bean.
type nameNodeJMX struct {
	url string
	// settle is how long to wait before a reading: Hadoop refreshes the
	// values JMX shows at most once per metrics period (10 s by default).
	settle time.Duration
}

func findNameNodeJMX(ctx context.Context, c *hdfs.Cluster) (*nameNodeJMX, error) {
	_, rpcPort, err := net.SplitHostPort(c.NameNode())
	if err != nil {
		return nil, err
	}
	pid, err := jvmPID(c.BaseDir())
	if err != nil {
		return nil, err
	}
	ports, err := listeningPorts(pid)
	if err != nil {
		return nil, err
	}
	for _, p := range ports {
		if strconv.Itoa(p) == rpcPort {
			continue
		}
		nn := &nameNodeJMX{url: fmt.Sprintf("http://127.0.0.1:%d/jmx?qry=Hadoop:service=NameNode,name=RpcDetailedActivityForPort%s", p, rpcPort)}
		if _, err := nn.read(ctx); err == nil {
			return nn, nil
		}
	}
	return nil, fmt.Errorf("none of the JVM's listening ports %v serves the namenode's RPC counters", ports)
}

// counts returns the namenode's RPC counts by method since it started.
func (nn *nameNodeJMX) counts(ctx context.Context) (map[string]int64, error) {
	if nn == nil {
		return nil, errors.New("namenode RPC counters not found")
	}
	select {
	case <-time.After(nn.settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return nn.read(ctx)
}

func (nn *nameNodeJMX) read(ctx context.Context) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, nn.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp, http.StatusOK, "GET "+nn.url); err != nil {
		return nil, err
	}
	var body struct {
		Beans []map[string]any `json:"beans"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("reading %s: %w", nn.url, err)
	}
	if len(body.Beans) == 0 {
		return nil, fmt.Errorf("%s: no such bean", nn.url)
	}
	counts := map[string]int64{}
	for k, v := range body.Beans[0] {
		method, ok := strings.CutSuffix(k, "NumOps")
		if f, isNum := v.(float64); ok && isNum {
			counts[method] = int64(f)
		}
	}
	return counts, nil
}

// jvmPID finds the MiniHdfs JVM started for the cluster in baseDir.
func jvmPID(baseDir string) (int, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		s := string(cmdline)
		if strings.Contains(s, "MiniHdfs") && strings.Contains(s, baseDir) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no MiniHdfs process for %s in /proc", baseDir)
}

// listeningPorts returns the TCP ports process pid listens on.
func listeningPorts(pid int) ([]int, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil {
				ports = append(ports, int(p))
			}
		}
		f.Close()
	}
	return ports, nil
}
