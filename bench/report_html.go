package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// plot geometry
const (
	plotW, plotH    = 720, 360
	padL, padR      = 70, 20
	padT, padB      = 20, 50
	innerW, innerH  = plotW - padL - padR, plotH - padT - padB
	maxNines        = 5 // x axis up to 99.999%
	percentileTicks = "0,90,99,99.9,99.99,99.999"
)

var colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"}

// WriteHTML writes a self-contained report (inline SVG, no scripts or
// external files): summary table, latency by percentile, throughput over
// time.
func (r *Result) WriteHTML(w io.Writer) error {
	var table strings.Builder
	if err := r.WriteTable(&table); err != nil {
		return err
	}
	lat, err := r.percentileSVG()
	if err != nil {
		return err
	}
	data := struct {
		Title      string
		Table      string
		Warning    string
		Latency    template.HTML
		Throughput template.HTML
	}{
		Title:      fmt.Sprintf("meridian bench: workload %s, %s", r.Workload, r.Start.Format("2006-01-02 15:04:05")),
		Table:      table.String(),
		Warning:    r.Warning,
		Latency:    template.HTML(lat),
		Throughput: template.HTML(r.throughputSVG()),
	}
	return reportTmpl.Execute(w, data)
}

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:800px}pre{background:#f6f6f6;padding:1em;overflow-x:auto}
.warn{color:#b00;font-weight:bold}svg text{font-size:12px;font-family:sans-serif}</style></head>
<body><h1>{{.Title}}</h1>
{{if .Warning}}<p class="warn">WARNING: {{.Warning}}</p>{{end}}
<pre>{{.Table}}</pre>
<h2>Latency by percentile</h2>
{{.Latency}}
<h2>Throughput over time</h2>
{{.Throughput}}
</body></html>
`))

// xOfPercentile maps a percentile to the HdrHistogram plotter's log axis:
// x = log10(1/(1-p)), so 90% → 1, 99% → 2, 99.9% → 3.
func xOfPercentile(p float64) float64 {
	if p >= 100 {
		return maxNines
	}
	return math.Min(maxNines, math.Log10(100/(100-p)))
}

func (r *Result) percentileSVG() (string, error) {
	type series struct {
		name   string
		points [][2]float64 // (nines, ms)
	}
	var all []series
	maxMs := 0.0
	for _, op := range r.ops() {
		h, err := r.Histogram(op)
		if err != nil {
			continue
		}
		s := series{name: string(op)}
		for _, b := range h.CumulativeDistributionWithTicks(5) {
			if b.Count == 0 {
				continue
			}
			v := ms(b.ValueAt)
			s.points = append(s.points, [2]float64{xOfPercentile(b.Quantile), v})
			maxMs = math.Max(maxMs, v)
		}
		all = append(all, s)
	}
	if maxMs == 0 {
		maxMs = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, plotW, plotH, plotW, plotH)
	axes(&b, "percentile", "latency (ms)", maxMs)
	for _, t := range strings.Split(percentileTicks, ",") {
		var p float64
		fmt.Sscan(t, &p)
		x := padL + xOfPercentile(p)/maxNines*innerW
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%s%%</text>`,
			x, padT, x, padT+innerH, x, padT+innerH+18, t)
	}
	for i, s := range all {
		var pts []string
		for _, p := range s.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", padL+p[0]/maxNines*innerW, padT+innerH-p[1]/maxMs*innerH))
		}
		c := colors[i%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, c, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`, padL+10, padT+15+15*i, c, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return b.String(), nil
}

func (r *Result) throughputSVG() string {
	maxT, maxOps := 1.0, 1.0
	for _, iv := range r.Intervals {
		maxT = math.Max(maxT, iv.T)
		maxOps = math.Max(maxOps, iv.Throughput)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, plotW, plotH, plotW, plotH)
	axes(&b, "seconds", "ops/s", maxOps)
	for i := 0; i <= 4; i++ {
		t := maxT * float64(i) / 4
		x := padL + float64(innerW)*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`, x, padT+innerH+18, t)
	}
	if r.Config.WarmupSeconds > 0 {
		x := padL + r.Config.WarmupSeconds/maxT*innerW
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="4"/><text x="%.1f" y="%d">warm-up ends</text>`,
			x, padT, x, padT+innerH, x+4, padT+12)
	}
	var pts []string
	for _, iv := range r.Intervals {
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", padL+iv.T/maxT*innerW, padT+innerH-iv.Throughput/maxOps*innerH))
	}
	fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, colors[0], strings.Join(pts, " "))
	b.WriteString(`</svg>`)
	return b.String()
}

// axes draws the frame, the y ticks and the axis labels.
func axes(b *strings.Builder, xLabel, yLabel string, maxY float64) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`, padL, padT, innerW, innerH)
	for i := 0; i <= 4; i++ {
		y := float64(padT+innerH) - float64(innerH)*float64(i)/4
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
			padL, y, padL+innerW, y, padL-6, y+4, short(maxY*float64(i)/4))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`, padL+innerW/2, plotH-8, xLabel)
	fmt.Fprintf(b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`, padT+innerH/2, padT+innerH/2, yLabel)
}

func short(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3f", v)
}
