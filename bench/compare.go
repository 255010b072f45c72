package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// CompareRow is one metric of two runs.
type CompareRow struct {
	Op     string
	Metric string
	A, B   float64
	// Ratio is B / A (0 when there is none: A is 0, or either run has no
	// such latency; see CompareRowN.Missing).
	Ratio float64
}

// CompareRowN is one metric of two or more runs.
type CompareRowN struct {
	Op     string
	Metric string
	// Values holds the metric of each run, in order.
	Values []float64
	// Ratios[i] is Values[i] / Values[0], 0 when there is none (see
	// HasRatio); Ratios[0] is 1 (or 0).
	Ratios []float64
	// Missing[i] is true when run i has no such figure: a latency of an
	// operation type none of whose operations succeeded in it (all
	// failed). Its value reads 0, which is no latency at all, so it has no
	// ratio: a 0.00x would read as infinitely faster. Nil when every run
	// has the figure.
	Missing []bool
}

// HasValue reports whether run i has the row's figure (see Missing).
func (r CompareRowN) HasValue(i int) bool { return i >= len(r.Missing) || !r.Missing[i] }

// HasRatio reports whether run i has a ratio to the first run: both have
// the figure, and the first's is not 0.
func (r CompareRowN) HasRatio(i int) bool {
	return r.Values[0] != 0 && r.HasValue(0) && r.HasValue(i)
}

// valueText renders run i's value with format, "-" when it has none.
func (r CompareRowN) valueText(i int, format func(float64) string) string {
	if !r.HasValue(i) {
		return "-"
	}
	return format(r.Values[i])
}

// ratioCell renders run i's ratio to the first, "-" when it has none.
func (r CompareRowN) ratioCell(i int, sign string) string {
	if !r.HasRatio(i) {
		return "-"
	}
	return ratioText(r.Ratios[i], r.Values[0], sign)
}

// Compare lines two results up metric by metric.
func Compare(a, b *Result) []CompareRow {
	var rows []CompareRow
	for _, r := range CompareN([]*Result{a, b}) {
		rows = append(rows, CompareRow{Op: r.Op, Metric: r.Metric, A: r.Values[0], B: r.Values[1], Ratio: r.Ratios[1]})
	}
	return rows
}

// CompareN lines results up metric by metric, each against the first.
func CompareN(results []*Result) []CompareRowN {
	var rows []CompareRowN
	addMissing := func(op, metric string, values []float64, missing []bool) {
		r := CompareRowN{Op: op, Metric: metric, Values: values, Ratios: make([]float64, len(values)), Missing: missing}
		for i, v := range r.Values {
			if r.HasRatio(i) {
				r.Ratios[i] = v / r.Values[0]
			}
		}
		rows = append(rows, r)
	}
	addValues := func(op, metric string, values []float64) { addMissing(op, metric, values, nil) }
	// add lines up one figure of stats; a latency is missing from a run
	// in which no operation of the type succeeded (or that has no such
	// type: an older result from before failing types were kept).
	add := func(op, metric string, get func(OpStats) float64, stats []OpStats, latency bool) {
		values := make([]float64, len(stats))
		var missing []bool
		for i, s := range stats {
			values[i] = get(s)
			if latency && s.Count == 0 {
				if missing == nil {
					missing = make([]bool, len(stats))
				}
				missing[i] = true
			}
		}
		addMissing(op, metric, values, missing)
	}
	all := func(op string, stats []OpStats) {
		add(op, "ops/s", func(s OpStats) float64 { return s.Throughput }, stats, false)
		add(op, "p50 ms", func(s OpStats) float64 { return s.P50 }, stats, true)
		add(op, "p90 ms", func(s OpStats) float64 { return s.P90 }, stats, true)
		add(op, "p99 ms", func(s OpStats) float64 { return s.P99 }, stats, true)
		add(op, "p99.9 ms", func(s OpStats) float64 { return s.P999 }, stats, true)
		add(op, "p99.99 ms", func(s OpStats) float64 { return s.P9999 }, stats, true)
		add(op, "max ms", func(s OpStats) float64 { return s.Max }, stats, true)
		add(op, "errors", func(s OpStats) float64 { return float64(s.Errors) }, stats, false)
	}
	for _, op := range unionOps(results) {
		stats := make([]OpStats, len(results))
		for i, r := range results {
			if s, ok := r.Ops[op]; ok {
				stats[i] = *s
			}
		}
		all(string(op), stats)
	}
	totals := make([]OpStats, len(results))
	for i, r := range results {
		totals[i] = r.Total
	}
	all("total", totals)
	// What each bench process's Go runtime did, and the cluster's WALs,
	// when every result says (results recorded before they did, or runs
	// that could not see the nodes' engines, do not).
	if rts, ok := every(results, func(r *Result) *RuntimeStats { return r.Runtime }); ok {
		addRT := func(metric string, get func(*RuntimeStats) float64) {
			addValues("runtime", metric, each(rts, get))
		}
		addRT("GC cycles", func(rt *RuntimeStats) float64 { return float64(rt.GCCycles) })
		addRT("GC pause max ms", func(rt *RuntimeStats) float64 { return rt.GCPauseMaxMs })
		addRT("sched delay p99 ms", func(rt *RuntimeStats) float64 { return rt.SchedDelayP99 })
		addRT("sched delay p99.9 ms", func(rt *RuntimeStats) float64 { return rt.SchedDelayP999 })
		addRT("sched delay max ms", func(rt *RuntimeStats) float64 { return rt.SchedDelayMax })
	}
	if disks, ok := every(results, func(r *Result) *DiskStats { return r.Disk }); ok {
		addDisk := func(metric string, get func(*DiskStats) float64) {
			addValues("disk", metric, each(disks, get))
		}
		addDisk("durable writes per fsync", func(d *DiskStats) float64 { return d.CommitsPerFsync })
		addDisk("WAL fsync p50 ms", func(d *DiskStats) float64 { return d.FsyncP50Ms })
		addDisk("WAL fsync p99 ms", func(d *DiskStats) float64 { return d.FsyncP99Ms })
		addDisk("WAL fsync max ms", func(d *DiskStats) float64 { return d.FsyncMaxMs })
	}
	return rows
}

// every is get of each result, and whether none of them was nil.
func every[T any](results []*Result, get func(*Result) *T) ([]*T, bool) {
	out := make([]*T, len(results))
	for i, r := range results {
		if out[i] = get(r); out[i] == nil {
			return nil, false
		}
	}
	return out, true
}

// each is get of each element of xs.
func each[T any](xs []*T, get func(*T) float64) []float64 {
	values := make([]float64, len(xs))
	for i, x := range xs {
		values[i] = get(x)
	}
	return values
}

// unionOps is the operation types present in any result, in Ops order.
func unionOps(results []*Result) []Op {
	var out []Op
	for _, op := range Ops {
		for _, r := range results {
			if _, ok := r.Ops[op]; ok {
				out = append(out, op)
				break
			}
		}
	}
	return out
}

// runLabel names the i-th run of a comparison: A, B, ... Z, then R27...
func runLabel(i int) string {
	if i < 26 {
		return string(rune('A' + i))
	}
	return "R" + strconv.Itoa(i+1)
}

// ratioText renders a ratio to base: "-" when base is 0 (no ratio); a
// value that fell to 0 (errors gone, say) is 0.00.
func ratioText(r, base float64, sign string) string {
	if base == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%s", r, sign)
}

// WriteCompare prints Compare's rows as a table.
func WriteCompare(w io.Writer, nameA, nameB string, a, b *Result) error {
	return WriteCompareN(w, []string{nameA, nameB}, []*Result{a, b})
}

// WriteCompareN prints two or more runs side by side, each with its ratio
// to the first (columns A, B, ..., B/A, ...).
func WriteCompareN(w io.Writer, names []string, results []*Result) error {
	if err := checkCompare(names, results); err != nil {
		return err
	}
	for i, r := range results {
		fmt.Fprintf(w, "%s: %s (workload %s, %s, %s)\n", runLabel(i), names[i], r.Workload, r.Start.Format("2006-01-02 15:04"), r.settings())
		for _, warn := range r.cautions() {
			fmt.Fprintf(w, "   %s: %s\n", runLabel(i), warn)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := []string{"op", "metric"}
	for i := range results {
		head = append(head, runLabel(i))
	}
	for i := 1; i < len(results); i++ {
		head = append(head, runLabel(i)+"/"+runLabel(0))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range CompareN(results) {
		cells := []string{r.Op, r.Metric}
		for i := range r.Values {
			cells = append(cells, r.valueText(i, func(v float64) string { return fmt.Sprintf("%.3f", v) }))
		}
		for i := 1; i < len(r.Ratios); i++ {
			cells = append(cells, r.ratioCell(i, "x"))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	return tw.Flush()
}

// CompareReport is a comparison's JSON form (meridian bench compare
// --json). Its field names are a contract, as Result's are: scripts read
// them.
type CompareReport struct {
	Runs []CompareRun       `json:"runs"`
	Rows []CompareReportRow `json:"rows"`
}

// CompareRun is one run of a comparison: where it came from, what it
// measured, and why its figures may not stand for a whole, healthy run.
type CompareRun struct {
	// Label names the run in the table: A, B, ...
	Label    string    `json:"label"`
	File     string    `json:"file"`
	Workload string    `json:"workload"`
	Start    time.Time `json:"start"`
	Config   RunConfig `json:"config"`
	Partial  bool      `json:"partial"`
	// Cautions are the lines the table prints under the run (interrupted,
	// failing operations...): empty when there are none.
	Cautions []string `json:"cautions"`
}

// CompareReportRow is one metric of every run, in the runs' order. A
// value is null where the run has no such figure (a latency of an
// operation type none of whose operations succeeded). ratios[i] is
// values[i] / values[0], null where there is none (either value null, or
// values[0] 0): ratios[0] is 1 or null.
type CompareReportRow struct {
	Op     string     `json:"op"`
	Metric string     `json:"metric"`
	Values []*float64 `json:"values"`
	Ratios []*float64 `json:"ratios"`
}

// NewCompareReport lines results up as WriteCompareN does, names[i]
// naming results[i].
func NewCompareReport(names []string, results []*Result) (*CompareReport, error) {
	if err := checkCompare(names, results); err != nil {
		return nil, err
	}
	rep := &CompareReport{Runs: []CompareRun{}, Rows: []CompareReportRow{}}
	for i, r := range results {
		cautions := r.cautions()
		if cautions == nil {
			cautions = []string{}
		}
		rep.Runs = append(rep.Runs, CompareRun{Label: runLabel(i), File: names[i], Workload: r.Workload, Start: r.Start,
			Config: r.Config, Partial: r.Partial, Cautions: cautions})
	}
	for _, c := range CompareN(results) {
		row := CompareReportRow{Op: c.Op, Metric: c.Metric, Values: make([]*float64, len(c.Values)), Ratios: make([]*float64, len(c.Values))}
		for i := range c.Values {
			if c.HasValue(i) {
				row.Values[i] = &c.Values[i]
			}
			if c.HasRatio(i) {
				row.Ratios[i] = &c.Ratios[i]
			}
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}

// WriteCompareJSON writes NewCompareReport's report as indented JSON.
func WriteCompareJSON(w io.Writer, names []string, results []*Result) error {
	rep, err := NewCompareReport(names, results)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// settings describes what a run's figures depend on beyond its workload:
// consistency levels and value size, so runs that differ in them are not
// compared unawares.
func (r *Result) settings() string {
	size := strconv.Itoa(r.Config.ValueSize) + "-byte values"
	if r.Config.ValueSizeMax > r.Config.ValueSize {
		size = fmt.Sprintf("%d-%d-byte values", r.Config.ValueSize, r.Config.ValueSizeMax)
	}
	read, write := r.Config.ReadConsistency, r.Config.WriteConsistency
	if read == "" {
		read = "?"
	}
	if write == "" {
		write = "?"
	}
	return fmt.Sprintf("reads %s, writes %s, %s", read, write, size)
}

// cautions says why a run's figures may not stand for a whole, healthy
// run: interrupted, or failing more than 1% of operations.
func (r *Result) cautions() []string {
	var out []string
	if r.Partial {
		out = append(out, "PARTIAL: the run was interrupted")
	}
	if r.Warning != "" {
		out = append(out, "WARNING: "+r.Warning)
	}
	return out
}

func checkCompare(names []string, results []*Result) error {
	if len(results) < 2 {
		return fmt.Errorf("compare needs at least two results, got %d", len(results))
	}
	if len(names) != len(results) {
		return errors.New("compare: one name per result")
	}
	return nil
}

// WriteCompareHTML writes one self-contained page overlaying every run in
// the same charts (latency by percentile, overall and per operation;
// throughput over time), each run in its own colour and named by names[i],
// with a table of every metric per run and each run's ratio to the first.
func WriteCompareHTML(w io.Writer, names []string, results []*Result) error {
	if err := checkCompare(names, results); err != nil {
		return err
	}
	type run struct {
		Label, Name, Color, Desc string
		Cautions                 []string
	}
	type row struct {
		Op, Metric     string
		Values, Ratios []string
	}
	type latChart struct {
		Title string
		SVG   template.HTML
	}
	var runs []run
	var heads []string
	for i, r := range results {
		loop := "closed loop"
		if r.Config.Rate > 0 {
			loop = fmt.Sprintf("open loop at %.0f ops/s", r.Config.Rate)
		}
		runs = append(runs, run{Label: runLabel(i), Name: names[i], Color: color(i),
			Desc: fmt.Sprintf("workload %s (%s), %s, %d workers, %s, %s, measured %.1fs after %gs warm-up, %s",
				r.Workload, r.Config.Mix, r.Start.Format("2006-01-02 15:04:05"), r.Config.Workers, loop, r.settings(),
				r.MeasuredSeconds, r.Config.WarmupSeconds, strings.TrimSpace(r.Config.Target)),
			Cautions: r.cautions()})
		if i > 0 {
			heads = append(heads, runLabel(i)+"/"+runLabel(0))
		}
	}
	var rows []row
	for _, c := range CompareN(results) {
		rw := row{Op: c.Op, Metric: c.Metric}
		prec := 3
		if c.Metric == "ops/s" || c.Metric == "errors" {
			prec = 0
		}
		for i := range c.Values {
			rw.Values = append(rw.Values, c.valueText(i, func(v float64) string { return strconv.FormatFloat(v, 'f', prec, 64) }))
		}
		for i := 1; i < len(c.Ratios); i++ {
			rw.Ratios = append(rw.Ratios, c.ratioCell(i, "×"))
		}
		rows = append(rows, rw)
	}

	legend := func(i int) string { return runLabel(i) + ": " + names[i] }
	var charts []latChart
	var total []series
	for i, r := range results {
		h, err := r.totalHistogram()
		if err != nil {
			return fmt.Errorf("%s: %w", names[i], err)
		}
		total = append(total, series{name: legend(i), color: color(i), class: fmt.Sprintf("run%d", i), points: percentilePoints(h)})
	}
	charts = append(charts, latChart{"all operations", template.HTML(percentileChart(total))})
	if ops := unionOps(results); len(ops) > 1 {
		for _, op := range ops {
			var lines []series
			for i, r := range results {
				h, err := r.Histogram(op)
				if err != nil || h.TotalCount() == 0 {
					continue // no curve: none stored, or every operation failed
				}
				lines = append(lines, series{name: legend(i), color: color(i), class: fmt.Sprintf("run%d", i), points: percentilePoints(h)})
			}
			charts = append(charts, latChart{string(op), template.HTML(percentileChart(lines))})
		}
	}
	var tput []series
	warm := results[0].Config.WarmupSeconds
	for i, r := range results {
		tput = append(tput, throughputSeries(r, legend(i), color(i), i)...)
		if r.Config.WarmupSeconds != warm {
			warm = 0 // different warm-ups: the dashed lines mark each
		}
	}
	title := "meridian bench compare: " + strings.Join(names, " vs ")
	return compareTmpl.Execute(w, struct {
		Title      string
		Runs       []run
		RatioHeads []string
		Rows       []row
		Latency    []latChart
		Throughput template.HTML
	}{title, runs, heads, rows, charts, template.HTML(throughputChart(tput, warm))})
}

var compareTmpl = template.Must(template.New("compare").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>` + pageStyle + `</style></head>
<body><h1>{{.Title}}</h1>
<ul class="runs">
{{range .Runs}}<li><span class="sw" style="background:{{.Color}}"></span><b>{{.Label}}: {{.Name}}</b> — {{.Desc}}{{range .Cautions}}<br><span class="warn">{{.}}</span>{{end}}</li>
{{end}}</ul>
<table class="compare">
<tr><th>op</th><th class="l">metric</th>{{range .Runs}}<th>{{.Label}}</th>{{end}}{{range .RatioHeads}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr><td>{{.Op}}</td><td class="l">{{.Metric}}</td>{{range .Values}}<td>{{.}}</td>{{end}}{{range .Ratios}}<td class="ratio">{{.}}</td>{{end}}</tr>
{{end}}</table>
<p>Ratios are each run's value divided by run A's: below 1× means lower latency (or fewer ops/s) than A.</p>
{{range .Latency}}<h2>Latency by percentile: {{.Title}}</h2>
{{.SVG}}
{{end}}<h2>Throughput over time</h2>
{{.Throughput}}
</body></html>
`))
