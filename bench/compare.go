package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// CompareRow is one metric of two runs.
type CompareRow struct {
	Op     string
	Metric string
	A, B   float64
	// Ratio is B / A (0 when A is 0).
	Ratio float64
}

// Compare lines two results up metric by metric.
func Compare(a, b *Result) []CompareRow {
	var rows []CompareRow
	add := func(op, metric string, x, y float64) {
		r := CompareRow{Op: op, Metric: metric, A: x, B: y}
		if x != 0 {
			r.Ratio = y / x
		}
		rows = append(rows, r)
	}
	both := func(op string, x, y OpStats) {
		add(op, "ops/s", x.Throughput, y.Throughput)
		add(op, "p50 ms", x.P50, y.P50)
		add(op, "p90 ms", x.P90, y.P90)
		add(op, "p99 ms", x.P99, y.P99)
		add(op, "p99.9 ms", x.P999, y.P999)
		add(op, "p99.99 ms", x.P9999, y.P9999)
		add(op, "max ms", x.Max, y.Max)
		add(op, "errors", float64(x.Errors), float64(y.Errors))
	}
	for _, op := range Ops {
		x, okA := a.Ops[op]
		y, okB := b.Ops[op]
		if okA || okB {
			if !okA {
				x = &OpStats{}
			}
			if !okB {
				y = &OpStats{}
			}
			both(string(op), *x, *y)
		}
	}
	both("total", a.Total, b.Total)
	return rows
}

// WriteCompare prints Compare's rows as a table.
func WriteCompare(w io.Writer, nameA, nameB string, a, b *Result) error {
	fmt.Fprintf(w, "A: %s (workload %s, %s)\nB: %s (workload %s, %s)\n", nameA, a.Workload, a.Start.Format("2006-01-02 15:04"), nameB, b.Workload, b.Start.Format("2006-01-02 15:04"))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tmetric\tA\tB\tB/A\t")
	for _, r := range Compare(a, b) {
		ratio := "-"
		if r.Ratio != 0 {
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.3f\t%s\t\n", r.Op, r.Metric, r.A, r.B, ratio)
	}
	return tw.Flush()
}
