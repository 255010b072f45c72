package bench

import (
	"io"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// hlogWriter streams interval histograms in the HdrHistogram log format
// (readable by HistogramLogProcessor and the HdrHistogram plotters): per
// interval, one untagged line of every operation (what tools read by
// default) and one tagged line per operation type. Values are nanoseconds.
type hlogWriter struct {
	lw *hdrhistogram.HistogramLogWriter
	// err is the first write error: the run reports it with its result
	// (the log is incomplete), and nothing more is written after it.
	err error
}

func newHlogWriter(w io.Writer, start time.Time) *hlogWriter {
	h := &hlogWriter{lw: hdrhistogram.NewHistogramLogWriter(w)}
	h.check(h.lw.OutputComment("[meridian bench interval log; values in nanoseconds]"))
	h.check(h.lw.OutputLogFormatVersion())
	// The log states its base time in whole seconds: intervals are
	// relative to that second, so readers rebuild their times exactly.
	base := start.UnixMilli() / 1000 * 1000
	h.check(h.lw.OutputStartTime(base))
	h.lw.SetBaseTime(base)
	h.check(h.lw.OutputBaseTime(base))
	h.check(h.lw.OutputLegend())
	return h
}

func (h *hlogWriter) check(err error) {
	if h.err == nil {
		h.err = err
	}
}

func (h *hlogWriter) write(hists map[Op]*hdrhistogram.Histogram, startMs, endMs int64) {
	if h.err != nil {
		return // lines after a torn one would read as garbage
	}
	all := newHist()
	for _, op := range Ops {
		if hist, ok := hists[op]; ok {
			all.Merge(hist)
		}
	}
	if all.TotalCount() > 0 {
		all.SetStartTimeMs(startMs)
		all.SetEndTimeMs(endMs)
		h.check(h.lw.OutputIntervalHistogram(all))
	}
	for _, op := range Ops {
		hist, ok := hists[op]
		if !ok || hist.TotalCount() == 0 {
			continue
		}
		hist.SetTag(string(op))
		hist.SetStartTimeMs(startMs)
		hist.SetEndTimeMs(endMs)
		h.check(h.lw.OutputIntervalHistogram(hist))
	}
}
