package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-dev/shoal/e2e/procstat"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/swarm"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

const pullRepo = "path2/big"

// check is one signature operation of the P2P plane, timed in a loop here.
type check struct {
	where, what string
	run         func() error
	cpu         time.Duration // CPU of this process per call
	count       float64       // calls in the measured pull
}

// p2pBench pulls a layer cold through the agent, counts the capability and
// signature checks the origin and the agent made for it, times each check
// in a loop, and prints the checks' CPU per GiB beside the CPU per GiB the
// processes spent on the whole pull. Neither the agent nor the seeder can
// turn the checks off, so "without" is the measured figure less the
// computed cost of the checks.
func p2pBench(ctx context.Context, env *cluster) error {
	c := env.c
	layer, err := newStreamLayer(7, c.pullSize)
	if err != nil {
		return err
	}
	if err := pushImage(ctx, env.origin.URL(), pullRepo, "latest", layer); err != nil {
		return err
	}
	d := digest.Digest(layer.digest.String())
	hc := &http.Client{Transport: newTransport(1)}
	tok, err := fetchToken(ctx, hc, env.origin.URL(), pullRepo)
	if err != nil {
		return err
	}
	capability, err := originCapability(ctx, hc, env.origin.URL(), pullRepo, d, tok)
	if err != nil {
		return err
	}
	// The seeder computes the metainfo (hashing the blob) and caches the
	// blob on the first GetMetainfo: a cost paid once per blob, not part of
	// the pull measured.
	t0 := time.Now()
	meta, err := seederMetainfo(ctx, env.origin.SeederAddr, d, capability)
	if err != nil {
		return err
	}
	slog.Info("origin seeder: metainfo computed and blob cached (once per blob, not in the figures)", "took", time.Since(t0).Round(time.Millisecond))
	keys, err := originKeys(ctx, hc, env.origin.URL())
	if err != nil {
		return err
	}

	pull, err := coldPull(ctx, env, hc, d, layer.size, tok)
	if err != nil {
		return err
	}

	// The checks are timed on the real capability and metainfo of this
	// pull, with the origin's published keys, as the agent and the seeder
	// run them.
	v := auth.NewVerifier(keys...)
	signer, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	unsigned := *meta
	checks := []*check{
		{where: "origin", what: "capability issued (authorized blob HEAD or GET)", count: pull.capabilitiesIssued,
			run: func() error { _, err := signer.IssueCapability(d, 30*time.Minute); return err }},
		{where: "origin seeder", what: "capability verified (GetMetainfo, Exchange stream)", count: pull.seederVerifies,
			run: func() error { return v.VerifyCapability(capability, d) }},
		{where: "agent", what: "capability verified (blob opened for a client, peers' streams)", count: pull.agentVerifies,
			run: func() error { return v.VerifyCapability(capability, d) }},
		{where: "agent", what: "metainfo signature verified", count: pull.metainfoVerifies,
			run: func() error { return v.VerifyMetainfo(meta) }},
	}
	sign := &check{run: func() error { m := unsigned; return signer.SignMetainfo(&m) }}
	for _, ch := range append(checks, sign) {
		if ch.cpu, err = timeLoop(ctx, c.loopTime, ch.run); err != nil {
			return fmt.Errorf("timing %s %s: %w", ch.where, ch.what, err)
		}
	}
	return p2pTable(c, pull, meta, checks, sign).print(c.markdown)
}

// pullFigures is what one cold pull through the agent cost and caused.
type pullFigures struct {
	bytes               int64
	took                time.Duration
	originCPU, agentCPU time.Duration
	capabilitiesIssued  float64 // blob HEADs and GETs the origin answered 200 (each carries a capability)
	seederVerifies      float64 // GetMetainfo calls and Exchange streams at the seeder
	agentVerifies       float64 // blob GETs the agent served (Open) and streams other agents opened to it
	metainfoVerifies    float64 // metainfo answers the agent got
}

func (p pullFigures) gib() float64 { return float64(p.bytes) / gib }

// coldPull GETs blob d through the agent once, hashing it as a client does,
// and reads the processes' CPU and counters around it.
func coldPull(ctx context.Context, env *cluster, hc *http.Client, d digest.Digest, size int64, tok string) (pullFigures, error) {
	originBefore, err := takeSample(ctx, env.origin.Server)
	if err != nil {
		return pullFigures{}, err
	}
	agentBefore, err := takeSample(ctx, env.agent.Server)
	if err != nil {
		return pullFigures{}, err
	}
	start := time.Now()
	if err := pullVerified(ctx, hc, env.agent.URL()+"/v2/"+pullRepo+"/blobs/"+d.String(), tok, d, size); err != nil {
		return pullFigures{}, err
	}
	took := time.Since(start)
	agentAfter, err := takeSample(ctx, env.agent.Server)
	if err != nil {
		return pullFigures{}, err
	}
	originAfter, err := takeSample(ctx, env.origin.Server)
	if err != nil {
		return pullFigures{}, err
	}
	od := func(name string, labels ...string) float64 { return originAfter.since(originBefore, name, labels...) }
	ad := func(name string, labels ...string) float64 { return agentAfter.since(agentBefore, name, labels...) }
	getMetainfo := od("shoal_origin_seeder_metainfo_requests_total")
	// In a one-agent pull every stream the agent opens goes to the seeder.
	streams := ad("shoal_agent_dials_total")
	return pullFigures{
		bytes:              size,
		took:               took,
		originCPU:          originAfter.cpu - originBefore.cpu,
		agentCPU:           agentAfter.cpu - agentBefore.cpu,
		capabilitiesIssued: od("shoal_origin_http_requests_total", "handler", "blob", "code", "200"),
		seederVerifies:     getMetainfo + streams,
		agentVerifies:      ad("shoal_agent_http_requests_total", "handler", "blob", "method", http.MethodGet),
		metainfoVerifies:   od("shoal_origin_seeder_metainfo_requests_total", "result", "ok"),
	}, nil
}

func p2pTable(c config, p pullFigures, meta *metainfo.Metainfo, checks []*check, sign *check) *table {
	t := &table{
		title: fmt.Sprintf("P2P plane: capability and signature checks in a cold pull of %s through one agent (%d pieces of %s)",
			sizeString(p.bytes), len(meta.PieceHashes), sizeString(meta.PieceLength)),
		header: []string{"process", "check", "per pull", "CPU µs each (timed loop)", "checks' CPU ms/GiB (computed)",
			"process CPU-s/GiB, checks on (measured)", "without checks (computed)", "share"},
	}
	perGiB := func(ch *check) float64 { return ch.count * float64(ch.cpu) / float64(time.Millisecond) / p.gib() }
	total := map[string]float64{}
	for _, ch := range checks {
		proc := "agent"
		if ch.where != "agent" {
			proc = "origin"
		}
		total[proc] += perGiB(ch)
		t.add(ch.where, ch.what, fmt.Sprint(ch.count), num(float64(ch.cpu)/float64(time.Microsecond)), num(perGiB(ch)), "", "", "")
	}
	for _, proc := range []struct {
		name string
		cpu  time.Duration
	}{{"origin", p.originCPU}, {"agent", p.agentCPU}} {
		measured := proc.cpu.Seconds() / p.gib()
		checksS := total[proc.name] / 1000
		t.add(proc.name+", all", "", "", "", num(total[proc.name]), num(measured), num(measured-checksS),
			fmt.Sprintf("%.3f%%", 100*checksS/measured))
	}
	verify := checks[1].cpu
	maxUploads := swarm.DefaultConfig().MaxUploadsPerBlob
	swarmChecks := float64(maxUploads+1)*float64(verify) + float64(checks[3].cpu)
	t.add("agent in a swarm, bound", fmt.Sprintf("%d peers' streams + 1 Open verified, 1 metainfo", maxUploads), "", "",
		num(swarmChecks/float64(time.Millisecond)/p.gib()), num(p.agentCPU.Seconds()/p.gib()), "", fmt.Sprintf("%.3f%%", 100*swarmChecks/float64(time.Second)/(p.agentCPU.Seconds())))
	t.note("measured: one cold pull through the agent (%s in %s, %s MB/s), utime+stime of the origin (registry API and seeder) and of the agent from /proc/PID/stat around it",
		sizeString(p.bytes), p.took.Round(time.Millisecond), num(float64(p.bytes)/1e6/p.took.Seconds()))
	t.note("computed: neither the agent nor the seeder has a switch to turn the checks off, so each check is timed in a loop in this program (%s each, this process's CPU per call, on the pull's own capability and metainfo with the origin's published keys) and multiplied by the checks the pull made, counted from the origin's and the agent's /metrics; \"without\" is measured minus computed",
		c.loopTime)
	t.note("the checks are per call and per stream, not per piece: a %d-piece layer costs the same checks as a 1-piece one, so their share falls with the layer's size", len(meta.PieceHashes))
	t.note("swarm bound: an agent in a swarm also verifies the capability of every agent that opens a stream to it, at most maxUploadsPerBlob (%d) at a time for a blob; its share is given against the cold pull's agent CPU", maxUploads)
	t.note("signing the metainfo: %s µs, once per blob and origin node (when its seeder first caches the blob; before the measured pull here)",
		num(float64(sign.cpu)/float64(time.Microsecond)))
	return t
}

// timeLoop calls fn for about d and returns this process's CPU per call
// (utime+stime, so the garbage collector's share of the work counts too).
func timeLoop(ctx context.Context, d time.Duration, fn func() error) (time.Duration, error) {
	self := os.Getpid()
	c0, err := procstat.CPU(self)
	if err != nil {
		return 0, err
	}
	n := 0
	for deadline := time.Now().Add(d); time.Now().Before(deadline) || n < 100; n++ {
		if err := fn(); err != nil {
			return 0, err
		}
		if n%1000 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	c1, err := procstat.CPU(self)
	if err != nil {
		return 0, err
	}
	return (c1 - c0) / time.Duration(n), nil
}

// originCapability HEADs a blob at the origin with a token and returns the
// capability it answers with, as the agent gets one.
func originCapability(ctx context.Context, hc *http.Client, originURL, repo string, d digest.Digest, tok string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, originURL+"/v2/"+repo+"/blobs/"+d.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("HEAD of blob %s: %w", d, err)
	}
	resp.Body.Close()
	c := resp.Header.Get(auth.CapabilityHeader)
	if resp.StatusCode != http.StatusOK || c == "" {
		return "", fmt.Errorf("HEAD of blob %s: %s with capability %q, want 200 with one", d, resp.Status, c)
	}
	return c, nil
}

// seederMetainfo asks the seeder for d's metainfo, presenting capability.
func seederMetainfo(ctx context.Context, seeder string, d digest.Digest, capability string) (*metainfo.Metainfo, error) {
	conn, err := grpc.NewClient(seeder, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dialing the seeder: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, auth.CapabilityMetadata, capability)
	p, err := peerpb.NewPeerClient(conn).GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: d.String()})
	if err != nil {
		return nil, fmt.Errorf("getting the metainfo of %s: %w", d, err)
	}
	return metainfo.FromProto(p)
}

// originKeys fetches the origin's public keys, as agents do.
func originKeys(ctx context.Context, hc *http.Client, originURL string) ([]auth.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, originURL+auth.KeysPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the origin's keys: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the origin's keys: %s (%v)", resp.Status, err)
	}
	return auth.ParseKeySet(b)
}

// pullVerified GETs url with a bearer token and checks the body's length
// and digest.
func pullVerified(ctx context.Context, hc *http.Client, url, tok string, d digest.Digest, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("pulling %s: %w", d, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("pulling %s: %s: %s", d, resp.Status, b)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("pulling %s: reading after %d bytes: %w", d, n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != size || got != d.String() {
		return fmt.Errorf("pulling %s: got %d bytes with digest %s, want %d bytes", d, n, got, size)
	}
	return nil
}

func sizeString(n int64) string {
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
