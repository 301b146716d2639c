package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// target is what a figure must reach for Shoal to PASS.
type target struct {
	kind  targetKind
	value float64
}

type targetKind int

const (
	targetNone       targetKind = iota // informational figure
	targetRatioAtLst                   // Shoal/registry:2 >= value
	targetBelow                        // Shoal's own figure < value
)

func (t target) String() string {
	switch t.kind {
	case targetRatioAtLst:
		return fmt.Sprintf("ratio >= %gx", t.value)
	case targetBelow:
		return fmt.Sprintf("Shoal < %g", t.value)
	default:
		return "-"
	}
}

// row is one figure of the report, measured on both servers.
type row struct {
	figure string
	unit   string
	shoal  float64
	ref    float64
	target target
	// rounds holds each round's Shoal/reference ratio, for figures
	// measured in rounds of both servers back to back.
	rounds []float64
	err    error // measurement failed on either side
}

// ratio is the median of the rounds' ratios when the figure was measured
// in rounds, else the ratio of the two figures.
func (r row) ratio() float64 {
	if len(r.rounds) > 0 {
		return median(r.rounds)
	}
	if r.ref == 0 {
		return math.NaN()
	}
	return r.shoal / r.ref
}

// verdict is PASS, MISS, "-" for informational figures, or ERROR.
func (r row) verdict() string {
	if r.err != nil {
		return "ERROR"
	}
	switch r.target.kind {
	case targetRatioAtLst:
		if r.ratio() >= r.target.value {
			return "PASS"
		}
		return "MISS"
	case targetBelow:
		if r.shoal < r.target.value {
			return "PASS"
		}
		return "MISS"
	default:
		return "-"
	}
}

func formatValue(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func formatRatio(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

// writeTable prints the report as aligned text or as a Markdown table (for docs/benchmarks.md).
func writeTable(w io.Writer, rows []row, shoalName, refName string, markdown bool) error {
	header := []string{"figure", shoalName, refName, "ratio", "target", "result"}
	lines := [][]string{header}
	for _, r := range rows {
		shoal, ref, ratio := formatValue(r.shoal), formatValue(r.ref), formatRatio(r.ratio())
		if r.err != nil {
			shoal, ref, ratio = "-", "-", "-"
		}
		lines = append(lines, []string{r.figure + " (" + r.unit + ")", shoal, ref, ratio, r.target.String(), r.verdict()})
	}
	if markdown {
		for i, l := range lines {
			if _, err := fmt.Fprintf(w, "| %s |\n", strings.Join(l, " | ")); err != nil {
				return err
			}
			if i == 0 {
				if _, err := fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(l))); err != nil {
					return err
				}
			}
		}
	} else if err := writeAligned(w, lines); err != nil {
		return err
	}
	var perRound []string
	for _, r := range rows {
		if len(r.rounds) < 2 || r.err != nil {
			continue
		}
		ratios := make([]string, len(r.rounds))
		for i, v := range r.rounds {
			ratios[i] = fmt.Sprintf("%.2f", v)
		}
		perRound = append(perRound, fmt.Sprintf("  %s: %s\n", r.figure, strings.Join(ratios, " ")))
	}
	if len(perRound) > 0 {
		if _, err := fmt.Fprintf(w, "\nratio: the median of the rounds' ratios (a round measures both servers back to back); each round's:\n%s", strings.Join(perRound, "")); err != nil {
			return err
		}
	}
	for _, r := range rows {
		if r.err != nil {
			if _, err := fmt.Fprintf(w, "\nERROR %s: %v\n", r.figure, r.err); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeAligned prints the figure column left-aligned and the others right-aligned.
func writeAligned(w io.Writer, lines [][]string) error {
	widths := make([]int, len(lines[0]))
	for _, l := range lines {
		for i, cell := range l {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	for _, l := range lines {
		var b strings.Builder
		for i, cell := range l {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			if i == 0 {
				b.WriteString(cell + pad)
			} else {
				b.WriteString("  " + pad + cell)
			}
		}
		if _, err := fmt.Fprintln(w, b.String()); err != nil {
			return err
		}
	}
	return nil
}
