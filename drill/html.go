package drill

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
)

// Chart geometry.
const (
	chartW, chartH = 860, 300
	marginL        = 64
	marginR        = 20
	marginT        = 24
	marginB        = 40
	plotW          = chartW - marginL - marginR
	plotH          = chartH - marginT - marginB
	legendH        = 18
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"}

func paletteColor(i int) string { return palette[i%len(palette)] }

// line is one series of a chart; points with a NaN y break the line.
type line struct {
	name   string
	color  string
	dashed bool
	xs, ys []float64
}

// band shades an x range (a phase) with a label.
type band struct {
	from, to float64
	label    string
	fill     string
}

// chart is a small inline-SVG line chart: x in seconds since the start, y
// from 0 to yMax (0: round value above the largest point).
type chart struct {
	yLabel string
	yMax   float64
	xMax   float64
	bands  []band
	marks  []band // vertical lines at phase starts (from only)
	notes  []note
	lines  []line
}

// note is a text placed at a data point.
type note struct {
	x, y float64
	text string
}

// ticks returns round tick values from 0 to at least max, at most n+1 of
// them, and the step.
func ticks(max float64, n int) ([]float64, float64) {
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		max = 1
	}
	raw := max / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for i := 0; float64(i)*step < max+step*0.999; i++ {
		out = append(out, math.Round(float64(i)*step*1e9)/1e9)
	}
	return out, step
}

func label(v, step float64) string {
	dec := 0
	if step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

func (c chart) svg() string {
	yMax := c.yMax
	if yMax <= 0 {
		for _, l := range c.lines {
			for _, y := range l.ys {
				if !math.IsNaN(y) {
					yMax = math.Max(yMax, y)
				}
			}
		}
	}
	yt, ystep := ticks(yMax, 5)
	yTop := yt[len(yt)-1]
	xt, xstep := ticks(c.xMax, 10)
	xTop := math.Max(c.xMax, 1)
	px := func(x float64) float64 { return marginL + math.Min(math.Max(x, 0), xTop)/xTop*plotW }
	py := func(y float64) float64 { return marginT + plotH - math.Min(y, yTop)/yTop*plotH }
	var legend []line
	colW := 0
	for _, l := range c.lines {
		if l.name != "" {
			legend = append(legend, l)
			colW = max(colW, 48+8*len(l.name))
		}
	}
	perRow := max(1, plotW/max(colW, 1))
	rows := (len(legend) + perRow - 1) / perRow
	h := chartH + legendH*rows + 8
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`, chartW, h, chartW, h)
	for _, bd := range c.bands {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`, px(bd.from), marginT, math.Max(px(bd.to)-px(bd.from), 1), plotH, bd.fill)
	}
	for _, v := range yt {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
			marginL, py(v), marginL+plotW, py(v), marginL-6, py(v)+4, label(v, ystep))
	}
	for _, v := range xt {
		if v > xTop {
			break
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, px(v), marginT+plotH+16, label(v, xstep))
	}
	// Phase marks close together share one label.
	lastX, lastLabel := -100.0, ""
	var labels []band
	for _, m := range c.marks {
		x := px(m.from)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="2 3"/>`, x, marginT, x, marginT+plotH)
		if x-lastX < 8*float64(len(lastLabel)+1) && len(labels) > 0 {
			labels[len(labels)-1].label += "·" + m.label
		} else {
			labels = append(labels, band{from: x, label: m.label})
		}
		lastX, lastLabel = x, labels[len(labels)-1].label
	}
	for _, lb := range labels {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#555">%s</text>`, lb.from+3, marginT-6, template.HTMLEscapeString(lb.label))
	}
	for _, n := range c.notes {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#333">%s</text>`, px(n.x)+3, py(n.y)-4, template.HTMLEscapeString(n.text))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`, marginL, marginT, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">seconds since the drill started</text>`, marginL+plotW/2, marginT+plotH+34)
	fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`, marginT+plotH/2, marginT+plotH/2, template.HTMLEscapeString(c.yLabel))
	for _, l := range c.lines {
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var seg []string
		flush := func() {
			if len(seg) == 1 {
				seg = append(seg, seg[0]) // a lone point: a dot
			}
			if len(seg) > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" stroke-linecap="round"%s points="%s"/>`, l.color, dash, strings.Join(seg, " "))
			}
			seg = seg[:0]
		}
		for i := range l.xs {
			if math.IsNaN(l.ys[i]) {
				flush()
				continue
			}
			seg = append(seg, fmt.Sprintf("%.1f,%.1f", px(l.xs[i]), py(l.ys[i])))
		}
		flush()
	}
	for i, l := range legend {
		x, y := marginL+(i%perRow)*colW, chartH+8+legendH*(i/perRow)
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"%s/><text x="%d" y="%d">%s</text>`,
			x, y-4, x+22, y-4, l.color, dash, x+28, y, template.HTMLEscapeString(l.name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// perSecond turns a per-second series into points at each second's middle,
// scaled, with -1 (nothing measured) as a gap.
func perSecond(vals []float64, scale float64) (xs, ys []float64) {
	for i, v := range vals {
		xs = append(xs, float64(i)+0.5)
		if v < 0 {
			ys = append(ys, math.NaN())
		} else {
			ys = append(ys, v*scale)
		}
	}
	return xs, ys
}

func (r *Report) decorate(c *chart) {
	c.xMax = r.EndS
	if r.FaultAtS != nil {
		to := r.EndS
		if r.HealedAtS != nil {
			to = *r.HealedAtS
		}
		c.bands = append(c.bands, band{from: *r.FaultAtS, to: to, fill: "#fde0dc"})
	}
	for _, p := range r.Phases {
		if p.Phase == Baseline {
			continue
		}
		c.marks = append(c.marks, band{from: p.StartS, label: string(p.Phase)})
	}
	if r.LoadEndS > 0 && r.LoadEndS < r.EndS-0.5 {
		c.marks = append(c.marks, band{from: r.LoadEndS, label: "workload stopped"})
	}
}

func (r *Report) availabilityChart(filter func(AvailabilitySeries) (string, bool)) string {
	c := chart{yLabel: "availability (%)", yMax: 100}
	r.decorate(&c)
	i := 0
	for _, s := range r.Availability {
		name, ok := filter(s)
		if !ok {
			continue
		}
		xs, ys := perSecond(s.Values, 100)
		c.lines = append(c.lines, line{name: name, color: paletteColor(i), xs: xs, ys: ys})
		i++
	}
	return c.svg()
}

func (r *Report) latencyChart() string {
	c := chart{yLabel: "LOCAL_QUORUM latency (ms)"}
	r.decorate(&c)
	for i, s := range r.Latency {
		xs, ys := perSecond(s.P99Ms, 1)
		c.lines = append(c.lines, line{name: s.DC + " p99", color: paletteColor(i), xs: xs, ys: ys})
		xs, ys = perSecond(s.P50Ms, 1)
		c.lines = append(c.lines, line{name: s.DC + " p50", color: paletteColor(i), dashed: true, xs: xs, ys: ys})
	}
	return c.svg()
}

func (r *Report) hintChart() string {
	c := chart{yLabel: "hints held for the target"}
	r.decorate(&c)
	for i, s := range r.Hints {
		xs, ys := perSecond(s.Values, 1)
		c.lines = append(c.lines, line{name: "for " + s.Target, color: paletteColor(i), xs: xs, ys: ys})
	}
	return c.svg()
}

func (r *Report) repairChart() string {
	c := chart{yLabel: "partitions exchanged in the round (%)", yMax: 100}
	r.decorate(&c)
	done := line{color: paletteColor(0)}
	for i, p := range r.Repair {
		if i > 0 && p.Round != r.Repair[i-1].Round {
			done.xs, done.ys = append(done.xs, p.AtS), append(done.ys, math.NaN())
		}
		pct := 0.0
		if p.Total > 0 {
			pct = 100 * float64(p.Done) / float64(p.Total)
		}
		done.xs, done.ys = append(done.xs, p.AtS), append(done.ys, pct)
	}
	for _, rd := range r.Rounds {
		var m uint64
		for _, n := range rd.Nodes {
			m += n.Mismatches
		}
		text := fmt.Sprintf("round %d: %d mismatches", rd.Round, m)
		if rd.Clean {
			text = fmt.Sprintf("round %d: clean", rd.Round)
		}
		c.notes = append(c.notes, note{x: rd.StartS, y: 88 - float64((rd.Round-1)%7)*12, text: text})
	}
	c.lines = []line{done}
	return c.svg()
}

// WriteHTML writes a self-contained page (inline SVG, no scripts): the
// verdict, the criteria, the summary table and plots over time of
// availability, latency, hint backlog and repair progress. The fault's
// span is shaded.
func (r *Report) WriteHTML(w io.Writer) error {
	var table strings.Builder
	if err := r.WriteTable(&table); err != nil {
		return err
	}
	data := struct {
		Title, Verdict, Table string
		Pass                  bool
		Criteria              []Verdict
		Levels, LocalByDC     template.HTML
		Latency, Hints        template.HTML
		Repair                template.HTML
		HasHints, HasRepair   bool
	}{
		Title:   fmt.Sprintf("meridian drill %s, %s", r.Scenario.Name, r.Started.Format("2006-01-02 15:04:05")),
		Verdict: r.Verdict(), Pass: r.Pass, Table: table.String(), Criteria: r.Criteria,
		Levels: template.HTML(r.availabilityChart(func(s AvailabilitySeries) (string, bool) { return s.Level, s.DC == AllDCs })),
		LocalByDC: template.HTML(r.availabilityChart(func(s AvailabilitySeries) (string, bool) {
			return "clients in " + s.DC, s.Level == LocalQuorum && s.DC != AllDCs
		})),
		Latency: template.HTML(r.latencyChart()),
		Hints:   template.HTML(r.hintChart()), HasHints: len(r.Hints) > 0,
		Repair: template.HTML(r.repairChart()), HasRepair: len(r.Repair) > 0 || len(r.Rounds) > 0,
	}
	return htmlTmpl.Execute(w, data)
}

var htmlTmpl = template.Must(template.New("drill").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}pre{background:#f6f6f6;padding:1em;overflow-x:auto}
.pass{color:#080}.fail{color:#b00}table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
svg{max-width:100%;height:auto}svg text{font-size:12px;font-family:sans-serif}</style></head>
<body><h1>{{.Title}}: <span class="{{if .Pass}}pass{{else}}fail{{end}}">{{.Verdict}}</span></h1>
<table><tr><th></th><th>criterion</th><th>wanted</th><th>got</th></tr>
{{range .Criteria}}<tr><td class="{{if .Pass}}pass{{else}}fail{{end}}">{{if .Pass}}PASS{{else}}FAIL{{end}}</td><td>{{.Name}}</td><td>{{.Want}}</td><td>{{.Got}}</td></tr>
{{end}}</table>
<p>The shaded span is the fault (from the end of induce to the end of heal).</p>
<h2>Availability per level (every client DC)</h2>
{{.Levels}}
<h2>LOCAL_QUORUM availability per client DC</h2>
{{.LocalByDC}}
<h2>LOCAL_QUORUM latency per client DC (solid p99, dashed p50)</h2>
{{.Latency}}
<h2>Hint backlog per target</h2>
{{if .HasHints}}{{.Hints}}{{else}}<p>No node held hints during the drill.</p>{{end}}
<h2>Convergence: repair rounds after the heal</h2>
{{if .HasRepair}}{{.Repair}}{{else}}<p>No repair round ran.</p>{{end}}
<h2>Summary</h2>
<pre>{{.Table}}</pre>
</body></html>
`))
