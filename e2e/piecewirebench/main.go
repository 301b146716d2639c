// Command piecewirebench moves one blob over loopback, piece by piece,
// with each of the peer protocol's data paths, and prints what each costs:
// throughput, and CPU-seconds per GiB of the sender and of the receiver
// (utime+stime from /proc, each side its own process), beside the load
// average (the machine is shared; other jobs take cores from both).
//
//	plain  internal/piecewire on plain TCP: sendfile(2) from the blob's file
//	tls    internal/piecewire on TLS 1.3 (AES-GCM): the file read and written through TLS
//	grpc   today's path: shoal.peer.v1 Exchange, PieceChunk messages, the
//	       receiver assembling each piece and verifying it afterwards
//	grpc-tls  the same on TLS 1.3
//
// Every receiver verifies every piece against its SHA-256; nothing is
// written to disk on the receiving side, so the figures are the transport
// and the hash. The blob file is written first and stays in the page
// cache. Run it on a quiet machine; -quick (64 MiB) proves it works.
//
//	go run ./e2e/piecewirebench [-size 1GiB] [-quick] [-modes plain,tls,grpc,grpc-tls]
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

func main() {
	size := flag.String("size", "1GiB", "blob size (KiB, MiB, GiB suffixes)")
	quick := flag.Bool("quick", false, "a 64 MiB blob: proves the benchmark works, says nothing about speed")
	modes := flag.String("modes", "plain,tls,grpc,grpc-tls", "data paths to measure, comma-separated")
	pieceLen := flag.String("piece", "4MiB", "piece length (a power of two)")
	pipeline := flag.Int("pipeline", 4, "requests outstanding per connection (the agent's maxInFlightPerPeer)")
	grpcChunk := flag.String("grpc-chunk", "256KiB", "PieceChunk size of the grpc modes (the agent sends 256 KiB, the origin seeder 1 MiB)")
	serve := flag.String("serve", "", "internal: run as the sending process of this mode")
	dir := flag.String("dir", "", "internal: the sender's working directory")
	flag.Parse()

	if *serve != "" {
		if err := runSender(*serve, *dir, parseSizeOrDie(*pieceLen), parseSizeOrDie(*grpcChunk)); err != nil {
			fmt.Fprintln(os.Stderr, "sender:", err)
			os.Exit(1)
		}
		return
	}
	n := parseSizeOrDie(*size)
	if *quick {
		n = 64 << 20
	}
	cfg := benchConfig{size: n, pieceLength: parseSizeOrDie(*pieceLen), pipeline: *pipeline, grpcChunk: parseSizeOrDie(*grpcChunk)}
	if err := run(cfg, strings.Split(*modes, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "piecewirebench:", err)
		os.Exit(1)
	}
}

type benchConfig struct {
	size, pieceLength int64
	pipeline          int
	grpcChunk         int64
}

// Files of the working directory shared by the two processes.
const (
	blobFile = "blob"
	certFile = "cert.pem"
	keyFile  = "key.pem"
	authFile = "origin-key.pem"
)

func run(cfg benchConfig, modes []string) error {
	for _, m := range modes {
		if !knownMode(m) {
			return fmt.Errorf("unknown mode %q (plain, tls, grpc, grpc-tls)", m)
		}
	}
	dir, err := os.MkdirTemp("", "piecewirebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Printf("piecewirebench: %s blob, %s pieces, %d requests pipelined, gRPC chunks of %s; load average %s\n",
		human(cfg.size), human(cfg.pieceLength), cfg.pipeline, human(cfg.grpcChunk), procstat.LoadAvg())
	meta, err := writeBlob(filepath.Join(dir, blobFile), cfg.size, cfg.pieceLength)
	if err != nil {
		return err
	}
	key, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	pemKey, err := key.MarshalPEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, authFile), pemKey, 0o600); err != nil {
		return err
	}
	pool, err := writeCert(dir)
	if err != nil {
		return err
	}
	capability, err := key.IssueCapability(meta.Digest, time.Hour)
	if err != nil {
		return err
	}
	clientTLS := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}

	fmt.Printf("%-9s %9s %9s %14s %14s %14s  %s\n", "mode", "MB/s", "wall s", "sender CPU-s", "receiver CPU-s", "total CPU-s", "notes")
	fmt.Printf("%-9s %9s %9s %14s %14s %14s\n", "", "", "", "per GiB", "per GiB", "per GiB")
	for _, mode := range modes {
		r, err := measure(dir, mode, meta, capability, clientTLS, cfg)
		if err != nil {
			return fmt.Errorf("mode %s: %w", mode, err)
		}
		gib := float64(cfg.size) / (1 << 30)
		fmt.Printf("%-9s %9.0f %9.2f %14.2f %14.2f %14.2f  %s\n", mode,
			float64(cfg.size)/r.wall.Seconds()/1e6, r.wall.Seconds(),
			r.sender.Seconds()/gib, r.receiver.Seconds()/gib, (r.sender+r.receiver).Seconds()/gib, r.notes)
	}
	fmt.Printf("load average after: %s\n", procstat.LoadAvg())
	return nil
}

func knownMode(m string) bool {
	switch m {
	case "plain", "tls", "grpc", "grpc-tls":
		return true
	}
	return false
}

type result struct {
	wall, sender, receiver time.Duration
	notes                  string
}

// measure starts the sender of mode in its own process, fetches the whole
// blob from it, and returns the wall time and both processes' CPU time
// over the transfer (the sender's start-up and the connection set-up are
// outside it).
func measure(dir, mode string, meta *metainfo.Metainfo, capability string, clientTLS *tls.Config, cfg benchConfig) (result, error) {
	exe, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(exe, "-serve", mode, "-dir", dir, "-piece", fmt.Sprint(cfg.pieceLength), "-grpc-chunk", fmt.Sprint(cfg.grpcChunk))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return result{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	addr, err := expectLine(lines, "ADDR ")
	if err != nil {
		return result{}, fmt.Errorf("starting the sender: %w", err)
	}
	var tlsConf *tls.Config
	if strings.HasSuffix(mode, "tls") {
		tlsConf = clientTLS
	}
	var f fetcher
	if strings.HasPrefix(mode, "grpc") {
		f, err = dialGRPC(addr, tlsConf, meta, capability)
	} else {
		f, err = dialPiecewire(addr, tlsConf, meta, capability, cfg.pipeline)
	}
	if err != nil {
		return result{}, err
	}
	defer f.close()

	pid, self := cmd.Process.Pid, os.Getpid()
	s0, err := procstat.CPU(pid)
	if err != nil {
		return result{}, err
	}
	r0, err := procstat.CPU(self)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := f.fetchAll(cfg.pipeline); err != nil {
		return result{}, err
	}
	wall := time.Since(start)
	s1, err := procstat.CPU(pid)
	if err != nil {
		return result{}, err
	}
	r1, err := procstat.CPU(self)
	if err != nil {
		return result{}, err
	}
	res := result{wall: wall, sender: s1 - s0, receiver: r1 - r0, notes: f.notes()}
	// The sender reports how it wrote the bytes once its input closes.
	f.close()
	_ = stdin.Close()
	if stats, err := expectLine(lines, "STATS "); err == nil && stats != "" {
		res.notes = strings.TrimSpace(res.notes + " " + stats)
	}
	return res, nil
}

func expectLine(sc *bufio.Scanner, prefix string) (string, error) {
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return rest, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("the sender exited without a %q line", strings.TrimSpace(prefix))
}

// fetcher fetches every piece of the blob over one connection, verifying
// each.
type fetcher interface {
	fetchAll(pipeline int) error
	notes() string
	close()
}

// writeBlob writes size pseudo-random bytes to path and computes their
// metainfo (which also reads the file into the page cache).
func writeBlob(path string, size, pieceLength int64) (*metainfo.Metainfo, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var seed [32]byte
	src := mrand.NewChaCha8(seed)
	h := digest.SHA256.Digester()
	if _, err := io.CopyN(io.MultiWriter(f, h.Hash()), src, size); err != nil {
		return nil, fmt.Errorf("writing the blob: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	m, err := metainfo.Compute(bufio.NewReaderSize(f, 1<<20), h.Digest(), size, pieceLength)
	if err != nil {
		return nil, fmt.Errorf("computing the blob's metainfo: %w", err)
	}
	return m, nil
}

// writeCert writes a self-signed certificate for 127.0.0.1 to dir and
// returns a pool trusting it.
func writeCert(dir string) (*x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "piecewirebench"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, certFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}

func serverTLS(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil
}

func parseSizeOrDie(s string) int64 {
	n, err := parseSize(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "piecewirebench:", err)
		os.Exit(2)
	}
	return n
}

func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			var n int64
			if _, err := fmt.Sscan(num, &n); err != nil || n <= 0 {
				return 0, fmt.Errorf("size %q: want a positive number with an optional KiB, MiB or GiB suffix", s)
			}
			return n * u.mult, nil
		}
	}
	return 0, errors.New("unreachable")
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// pieceBuffers recycles piece buffers on the receiving side, as the agent's
// piece store does, so the receiver's figure is not allocation and zeroing.
type pieceBuffers chan []byte

func (p pieceBuffers) get(size int64) []byte {
	select {
	case b := <-p:
		if int64(cap(b)) >= size {
			return b[:size]
		}
	default:
	}
	return make([]byte, size)
}

func (p pieceBuffers) put(b []byte) {
	select {
	case p <- b:
	default:
	}
}
