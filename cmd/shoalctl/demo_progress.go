package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// progress shows the agents' pulls: bars redrawn in place on a terminal,
// a line per agent at each quarter elsewhere (a log, a pipe, CI).
type progress struct {
	out   io.Writer
	tty   bool
	names []string
	got   []*atomic.Int64
	total int64
	// quarter[i] is the last quarter printed for agent i (plain lines).
	quarter []int64
	drawn   bool
}

func newProgress(out io.Writer, names []string, got []*atomic.Int64, total int64) *progress {
	return &progress{out: out, tty: isTerminal(out), names: names, got: got, total: total, quarter: make([]int64, len(names))}
}

// isTerminal reports whether w is a character device, where the bars can
// be redrawn with cursor moves.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// run draws every interval until done is closed, then once more.
func (p *progress) run(done <-chan struct{}) {
	interval := time.Second
	if p.tty {
		interval = 150 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			p.draw()
			return
		case <-t.C:
			p.draw()
		}
	}
}

func (p *progress) draw() {
	if !p.tty {
		for i, g := range p.got {
			n := g.Load()
			if q := 4 * n / max(p.total, 1); q > p.quarter[i] {
				p.quarter[i] = q
				fmt.Fprintf(p.out, "  %-8s %3d%%  %s of %s\n", p.names[i], 100*n/max(p.total, 1), mib(n), mib(p.total))
			}
		}
		return
	}
	var b strings.Builder
	if p.drawn {
		fmt.Fprintf(&b, "\x1b[%dA", len(p.names)) // back to the first bar
	}
	const width = 30
	for i, g := range p.got {
		n := g.Load()
		fill := int(width * n / max(p.total, 1))
		fmt.Fprintf(&b, "\x1b[2K  %-8s [%s%s] %3d%%  %s of %s\n", p.names[i],
			strings.Repeat("#", fill), strings.Repeat(" ", width-fill), 100*n/max(p.total, 1), mib(n), mib(p.total))
	}
	p.drawn = true
	_, _ = io.WriteString(p.out, b.String())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
