package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// plot geometry: the right and top margins leave room for the last x label
// and the top y label.
const (
	plotW, plotH    = 760, 380
	padL, padR      = 70, 40
	padT, padB      = 30, 50
	innerW, innerH  = plotW - padL - padR, plotH - padT - padB
	legendRow       = 18
	maxNines        = 5 // x axis up to 99.999%
	percentileTicks = "0,90,99,99.9,99.99,99.999"
	yTicks          = 8 // at most this many labels on a y axis
	xTimeTicks      = 9 // at most this many labels on a time axis
)

var colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"}

func color(i int) string { return colors[i%len(colors)] }

// niceTicks returns at most maxTicks round tick values (steps of 1, 2 or 5
// × 10^k) covering [min, max]: the first tick is <= min, the last >= max.
// A degenerate range is widened; maxTicks below 2 counts as 2.
func niceTicks(min, max float64, maxTicks int) []float64 {
	if maxTicks < 2 {
		maxTicks = 2
	}
	if math.IsNaN(min) || math.IsNaN(max) || math.IsInf(min, 0) || math.IsInf(max, 0) {
		return []float64{0, 1}
	}
	if min > max {
		min, max = max, min
	}
	if min == max {
		d := math.Abs(min) / 10
		if d == 0 {
			d = 1
		}
		if min >= 0 && min-d < 0 {
			max += d
		} else {
			min, max = min-d, max+d
		}
	}
	mag := math.Pow(10, math.Floor(math.Log10((max-min)/float64(maxTicks-1))))
	for {
		for _, m := range []float64{1, 2, 5} {
			step := m * mag
			lo, hi := math.Floor(min/step+1e-9), math.Ceil(max/step-1e-9)
			n := int(hi-lo) + 1
			if n > maxTicks {
				continue
			}
			dec := 0
			if step < 1 {
				dec = int(math.Ceil(-math.Log10(step) - 1e-9))
			}
			ticks := make([]float64, n)
			for i := range ticks {
				ticks[i], _ = strconv.ParseFloat(strconv.FormatFloat((lo+float64(i))*step, 'f', dec, 64), 64)
			}
			return ticks
		}
		mag *= 10
	}
}

// tickLabel formats a tick value with as many decimals as the step needs;
// whole thousands (with steps of a thousand or more) are shown as "12k".
func tickLabel(v, step float64) string {
	if v == 0 {
		return "0"
	}
	if step >= 1000 && math.Mod(v, 1000) == 0 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	dec := 0
	if step > 0 && step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// series is one line of a chart; a series with a name is in the legend.
type series struct {
	name   string
	color  string
	dashed bool
	class  string
	points [][2]float64 // data coordinates
}

type xTick struct {
	x     float64
	label string
}

// chart is an inline SVG line chart with x in [0, xMax] and y from 0 to a
// round value above the largest point.
type chart struct {
	xLabel, yLabel string
	xMax           float64
	xTicks         []xTick
	// shadeTo > 0 shades [0, shadeTo] as the warm-up.
	shadeTo float64
	series  []series
}

func (c *chart) svg() string {
	yMax := 0.0
	var legend []series
	for _, s := range c.series {
		for _, p := range s.points {
			yMax = math.Max(yMax, p[1])
		}
		if s.name != "" {
			legend = append(legend, s)
		}
	}
	yt := niceTicks(0, yMax, yTicks)
	top := yt[len(yt)-1]
	xMax := c.xMax
	if xMax <= 0 {
		xMax = 1
	}
	px := func(x float64) float64 { return padL + math.Min(x, xMax)/xMax*innerW }
	py := func(y float64) float64 { return padT + innerH - y/top*innerH }
	height := plotH + legendRow*len(legend)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, plotW, height, plotW, height)
	if c.shadeTo > 0 {
		fmt.Fprintf(&b, `<rect class="warmup-region" x="%d" y="%d" width="%.1f" height="%d" fill="#eee"/><text x="%d" y="%d" fill="#666">warm-up (not in the summary)</text>`,
			padL, padT, px(c.shadeTo)-padL, innerH, padL+4, padT+14)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`, padL, padT, innerW, innerH)
	for _, v := range yt {
		y := py(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
			padL, y, padL+innerW, y, padL-6, y+4, tickLabel(v, yt[1]-yt[0]))
	}
	for i, t := range c.xTicks {
		x := px(t.x)
		anchor := "middle"
		if i == len(c.xTicks)-1 && x >= padL+innerW-30 {
			anchor = "end" // keep the last label inside the picture
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="%s">%s</text>`,
			x, padT, x, padT+innerH, x, padT+innerH+18, anchor, template.HTMLEscapeString(t.label))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`, padL+innerW/2, padT+innerH+40, c.xLabel)
	fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`, padT+innerH/2, padT+innerH/2, c.yLabel)
	for _, s := range c.series {
		if len(s.points) == 0 {
			continue
		}
		pts := make([]string, len(s.points))
		for i, p := range s.points {
			pts[i] = fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1]))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<polyline class="%s" fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`, s.class, s.color, dash, strings.Join(pts, " "))
	}
	for i, s := range legend {
		y := plotH + legendRow*i + 4
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"%s/><text x="%d" y="%d">%s</text>`,
			padL, y, padL+24, y, s.color, dash, padL+30, y+4, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// xOfPercentile maps a percentile to the HdrHistogram plotter's log axis:
// x = log10(1/(1-p)), so 90% → 1, 99% → 2, 99.9% → 3.
func xOfPercentile(p float64) float64 {
	if p >= 100 {
		return maxNines
	}
	return math.Min(maxNines, math.Log10(100/(100-p)))
}

func percentileXTicks() []xTick {
	var out []xTick
	for _, t := range strings.Split(percentileTicks, ",") {
		p, _ := strconv.ParseFloat(t, 64)
		out = append(out, xTick{xOfPercentile(p), t + "%"})
	}
	return out
}

// percentilePoints is a histogram's latency (ms) by percentile (nines).
func percentilePoints(h *hdrhistogram.Histogram) [][2]float64 {
	var pts [][2]float64
	for _, b := range h.CumulativeDistributionWithTicks(5) {
		if b.Count == 0 {
			continue
		}
		pts = append(pts, [2]float64{xOfPercentile(b.Quantile), ms(b.ValueAt)})
	}
	return pts
}

func percentileChart(lines []series) string {
	c := chart{xLabel: "percentile", yLabel: "latency (ms)", xMax: maxNines, xTicks: percentileXTicks(), series: lines}
	return c.svg()
}

// totalHistogram merges the stored per-operation histograms (those
// present).
func (r *Result) totalHistogram() (*hdrhistogram.Histogram, error) {
	all := newHist()
	for _, op := range r.ops() {
		if _, ok := r.Histograms[op]; !ok {
			continue // an older or hand-made result: the summary has no curve
		}
		h, err := r.Histogram(op)
		if err != nil {
			return nil, fmt.Errorf("histogram of %s: %w", op, err)
		}
		all.Merge(h)
	}
	return all, nil
}

// throughputSeries draws the warm-up intervals dashed (joined to the first
// measured one) and the measured intervals solid.
func throughputSeries(r *Result, name, col string, run int) []series {
	warm := series{color: col, dashed: true, class: fmt.Sprintf("warmup run%d", run)}
	meas := series{name: name, color: col, class: fmt.Sprintf("measured run%d", run)}
	for _, iv := range r.Intervals {
		p := [2]float64{iv.T, iv.Throughput}
		if iv.Warmup {
			warm.points = append(warm.points, p)
			continue
		}
		if len(meas.points) == 0 && len(warm.points) > 0 {
			warm.points = append(warm.points, p)
		}
		meas.points = append(meas.points, p)
	}
	if len(meas.points) == 0 {
		return []series{warm}
	}
	return []series{warm, meas}
}

func throughputChart(lines []series, shadeTo float64) string {
	maxT := shadeTo
	for _, s := range lines {
		for _, p := range s.points {
			maxT = math.Max(maxT, p[0])
		}
	}
	for _, s := range lines {
		if s.dashed && len(s.points) > 0 {
			// One legend entry for every dashed line (a legend-only series).
			lines = append(lines[:len(lines):len(lines)], series{name: "dashed: warm-up, not in the summary", color: "#888", dashed: true})
			break
		}
	}
	ticks := niceTicks(0, maxT, xTimeTicks)
	var xt []xTick
	for _, t := range ticks {
		xt = append(xt, xTick{t, tickLabel(t, ticks[1]-ticks[0])})
	}
	c := chart{xLabel: "seconds since start", yLabel: "ops/s", xMax: ticks[len(ticks)-1], xTicks: xt, shadeTo: shadeTo, series: lines}
	return c.svg()
}

// summaryRow is one line of the HTML summary table.
type summaryRow struct {
	Name                                              string
	Count, Errors                                     int64
	Throughput, Mean, P50, P90, P99, P999, P9999, Max string
}

func newSummaryRow(name string, s OpStats) summaryRow {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	if s.Count == 0 {
		// Nothing succeeded: no latency, rather than zeros that read as
		// instant.
		f = func(float64) string { return "-" }
	}
	return summaryRow{Name: name, Count: s.Count, Errors: s.Errors, Throughput: strconv.FormatFloat(s.Throughput, 'f', 0, 64),
		Mean: f(s.Mean), P50: f(s.P50), P90: f(s.P90), P99: f(s.P99), P999: f(s.P999), P9999: f(s.P9999), Max: f(s.Max)}
}

// WriteHTML writes a self-contained report (inline SVG, no scripts or
// external files): summary table, latency by percentile, throughput over
// time (warm-up included, shaded and dashed).
func (r *Result) WriteHTML(w io.Writer) error {
	var lat []series
	for i, op := range r.ops() {
		h, err := r.Histogram(op)
		if err != nil || h.TotalCount() == 0 {
			continue // no curve: none stored, or every operation failed
		}
		lat = append(lat, series{name: string(op), color: color(i), class: "op-" + string(op), points: percentilePoints(h)})
	}
	var rows []summaryRow
	for _, op := range r.ops() {
		rows = append(rows, newSummaryRow(string(op), *r.Ops[op]))
	}
	rows = append(rows, newSummaryRow("total", r.Total))
	loop := "closed loop"
	if r.Config.Rate > 0 {
		loop = fmt.Sprintf("open loop at %.0f ops/s", r.Config.Rate)
	}
	data := struct {
		Title, Setup, Measured, Warning, ErrorCodes string
		Partial                                     bool
		Rows                                        []summaryRow
		Latency, Throughput                         template.HTML
		// Examples are the first message of each error code and op.
		Examples []errorExample
	}{
		Title: fmt.Sprintf("meridian bench: workload %s, %s", r.Workload, r.Start.Format("2006-01-02 15:04:05")),
		Setup: fmt.Sprintf("%s phase, workload %s (%s), %s distribution, %d records, %d workers, %s",
			r.Phase, r.Workload, r.Config.Mix, r.Config.Distribution, r.Config.RecordCount, r.Config.Workers, loop),
		Measured: fmt.Sprintf("measured %.1fs (after %gs warm-up) on %s/%s, %d CPUs", r.MeasuredSeconds, r.Config.WarmupSeconds,
			r.Machine.GOOS, r.Machine.GOARCH, r.Machine.NumCPU),
		Warning:    r.Warning,
		ErrorCodes: errorCodes(r.Errors),
		Examples:   errorExamples(r.ErrorExamples),
		Partial:    r.Partial,
		Rows:       rows,
		Latency:    template.HTML(percentileChart(lat)),
		Throughput: template.HTML(throughputChart(throughputSeries(r, "", color(0), 0), r.Config.WarmupSeconds)),
	}
	if r.Config.Target != "" {
		data.Setup += ", " + r.Config.Target
	}
	return reportTmpl.Execute(w, data)
}

// errorExample is one code's first message, for the report.
type errorExample struct{ Code, Message string }

func errorExamples(m map[string]string) []errorExample {
	out := make([]errorExample, 0, len(m))
	for c, msg := range m {
		out = append(out, errorExample{c, msg})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

func errorCodes(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	codes := make([]string, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	var b strings.Builder
	for i, c := range codes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", c, m[c])
	}
	return b.String()
}

// pageStyle lets tables grow with their content (no fixed height, no
// scrolling box) and scales charts down on narrow windows.
const pageStyle = `body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #ddd;white-space:nowrap}
th:first-child,td:first-child,th.l,td.l{text-align:left}tr.total td{font-weight:bold}
.warn{color:#b00;font-weight:bold}svg{max-width:100%;height:auto}svg text{font-size:12px;font-family:sans-serif}
.sw{display:inline-block;width:1.5em;height:.6em;margin-right:.4em}`

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>` + pageStyle + `</style></head>
<body><h1>{{.Title}}</h1>
{{if .Warning}}<p class="warn">WARNING: {{.Warning}}</p>{{end}}
{{if .Partial}}<p class="warn">PARTIAL: the run was interrupted</p>{{end}}
<p>{{.Setup}}<br>{{.Measured}}</p>
<table class="summary">
<tr><th>op</th><th>count</th><th>errors</th><th>ops/s</th><th>mean ms</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr>
{{range .Rows}}<tr{{if eq .Name "total"}} class="total"{{end}}><td>{{.Name}}</td><td>{{.Count}}</td><td>{{.Errors}}</td><td>{{.Throughput}}</td><td>{{.Mean}}</td><td>{{.P50}}</td><td>{{.P90}}</td><td>{{.P99}}</td><td>{{.P999}}</td><td>{{.P9999}}</td><td>{{.Max}}</td></tr>
{{end}}</table>
{{if .ErrorCodes}}<p>errors by code: {{.ErrorCodes}}</p>{{end}}
{{if .Examples}}<ul class="examples">{{range .Examples}}<li>first {{.Code}}: <code>{{.Message}}</code></li>
{{end}}</ul>{{end}}
<h2>Latency by percentile</h2>
{{.Latency}}
<h2>Throughput over time</h2>
{{.Throughput}}
</body></html>
`))
