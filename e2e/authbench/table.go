package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

// table is one benchmark's result: a title, rows of cells, and notes that
// say how to read it.
type table struct {
	title  string
	header []string
	rows   [][]string
	notes  []string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

// write prints the table aligned for a terminal, or as Markdown for
// docs/benchmarks.md.
func (t *table) write(w io.Writer, markdown bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\n== %s\n\n", t.title)
	if markdown {
		line := func(cells []string) { fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | ")) }
		line(t.header)
		b.WriteString("|" + strings.Repeat("---|", len(t.header)) + "\n")
		for _, r := range t.rows {
			line(r)
		}
	} else {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, r := range append([][]string{t.header}, t.rows...) {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(t.notes) > 0 {
		b.WriteString("\n")
		for _, n := range t.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// print writes the table to standard output.
func (t *table) print(markdown bool) error { return t.write(os.Stdout, markdown) }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// num formats a figure with three significant digits or more.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
