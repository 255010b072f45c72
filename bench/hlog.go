package bench

import (
	"io"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// hlogWriter streams interval histograms in the HdrHistogram log format
// (readable by HistogramLogProcessor and the HdrHistogram plotters), one
// tagged line per operation type per interval. Values are nanoseconds.
type hlogWriter struct {
	lw  *hdrhistogram.HistogramLogWriter
	err error
}

func newHlogWriter(w io.Writer, start time.Time) *hlogWriter {
	h := &hlogWriter{lw: hdrhistogram.NewHistogramLogWriter(w)}
	h.check(h.lw.OutputComment("[meridian bench interval log; values in nanoseconds]"))
	h.check(h.lw.OutputLogFormatVersion())
	h.check(h.lw.OutputStartTime(start.UnixMilli()))
	h.lw.SetBaseTime(start.UnixMilli())
	h.check(h.lw.OutputBaseTime(start.UnixMilli()))
	h.check(h.lw.OutputLegend())
	return h
}

func (h *hlogWriter) check(err error) {
	if h.err == nil {
		h.err = err
	}
}

func (h *hlogWriter) write(hists map[Op]*hdrhistogram.Histogram, startMs, endMs int64) {
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
