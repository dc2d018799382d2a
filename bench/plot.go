package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The plots are SVG written by hand: no plotting dependency. Each point is
// the median of the repetitions; whiskers span min to max.

const (
	colOurs     = "#1f6feb"
	colOurs2    = "#54aeff"
	colAsynq    = "#d1242f"
	colRiver    = "#8250df"
	colRaw      = "#57606a"
	colLocal    = "#1a7f37"
	fontFamily  = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""
	panelWidth  = 520.0
	panelHeight = 320.0
)

// writePlots writes tasks.svg (end-to-end throughput, ours beside the
// peers) and growth.svg (how cost grows) into dir; it returns the files it
// wrote.
func writePlots(dir string, res *Results, cfg Config) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	write := func(name, svg string) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(svg), 0o644); err != nil {
			return err
		}
		files = append(files, p)
		return nil
	}
	stamp := fmt.Sprintf("median of %d repetition(s), whiskers min–max", cfg.Reps)

	// tasks.svg: one bar chart.
	var bars []bar
	for _, b := range []struct{ label, key, color string }{
		{"qtasks, lifecycle facts only", "tasks.life.m0", colOurs2},
		{"qtasks, all triggers recorded", "tasks.all.m0", colOurs},
		{"qtasks, all recorded, 1 mutator", "tasks.all.m1", colOurs},
		{"qtasks, all recorded, 3 mutators", "tasks.all.m3", colOurs},
		{"qtasks, all recorded, concurrency 10", "tasks.all.m0.c10", colOurs2},
		{"Asynq/Redis, tuned", "asynq.tuned", colAsynq},
		{"Asynq/Redis, defaults", "asynq.default", colAsynq},
		{"River/SQLite, tuned", "river.tuned", colRiver},
		{"River/SQLite, defaults", "river.default", colRiver},
	} {
		if med, lo, hi, n := res.stat(b.key); n > 0 {
			bars = append(bars, bar{b.label, med, lo, hi, b.color})
		}
	}
	if len(bars) > 0 {
		var s strings.Builder
		h := 60 + 30*float64(len(bars)) + 50
		svgOpen(&s, panelWidth+260, h)
		barChart(&s, 0, 0, panelWidth+260, h, "No-op tasks end to end (submit → final status), tasks/s", stamp, bars)
		s.WriteString("</svg>\n")
		if err := write("tasks.svg", s.String()); err != nil {
			return files, err
		}
	}

	// growth.svg: three line charts side by side.
	var panels []func(s *strings.Builder, x, y float64)
	if series := mutatorSeries(res); len(series) > 0 {
		panels = append(panels, func(s *strings.Builder, x, y float64) {
			lineChart(s, x, y, "tasks/s vs in-process mutators (all recorded)", "mutators", "tasks/s", false, false, series)
		})
	}
	if series := payloadSeries(res); len(series) > 0 {
		panels = append(panels, func(s *strings.Builder, x, y float64) {
			lineChart(s, x, y, "round trip vs payload (log–log)", "payload bytes", "µs", true, true, series)
		})
	}
	if series := rebuildSeries(res, cfg); len(series) > 0 {
		panels = append(panels, func(s *strings.Builder, x, y float64) {
			lineChart(s, x, y, "projection rebuild time vs history (log–log)", "events", "seconds", true, true, series)
		})
	}
	if series := rssSeries(res, cfg); len(series) > 0 {
		panels = append(panels, func(s *strings.Builder, x, y float64) {
			lineChart(s, x, y, "qtasksd peak RSS vs history (target < 150 MB)", "tasks in the history", "MB", false, false, series)
		})
	}
	if len(panels) > 0 {
		var s strings.Builder
		cols := min(2, len(panels))
		rows := (len(panels) + cols - 1) / cols
		svgOpen(&s, panelWidth*float64(cols), panelHeight*float64(rows)+30)
		for i, p := range panels {
			p(&s, float64(i%cols)*panelWidth, float64(i/cols)*panelHeight)
		}
		fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" font-size="11" fill="#57606a" %s>How cost grows — %s</text>`+"\n",
			10.0, panelHeight*float64(rows)+20, fontFamily, html.EscapeString(stamp))
		s.WriteString("</svg>\n")
		if err := write("growth.svg", s.String()); err != nil {
			return files, err
		}
	}
	return files, nil
}

type bar struct {
	label         string
	value, lo, hi float64
	color         string
}

type series struct {
	name   string
	color  string
	dashed bool
	xs     []float64
	ys     []float64
	lo, hi []float64
}

func mutatorSeries(res *Results) []series {
	s := series{name: "qtasks", color: colOurs}
	for _, m := range growthMutators {
		med, lo, hi, n := res.stat(fmt.Sprintf("tasks.all.m%d", m))
		if n == 0 {
			continue
		}
		s.xs, s.ys, s.lo, s.hi = append(s.xs, float64(m)), append(s.ys, med), append(s.lo, lo), append(s.hi, hi)
	}
	if len(s.xs) < 2 {
		return nil
	}
	return []series{s}
}

func payloadSeries(res *Results) []series {
	sizes := append([]int{growthPayloads[0], factSize}, growthPayloads[1:]...)
	var out []series
	for _, v := range []struct {
		name, side, q, color string
		dashed               bool
	}{
		{"raw p50", "raw", "p50", colRaw, false},
		{"raw p99", "raw", "p99", colRaw, true},
		{"plugin process p50", "proc", "p50", colOurs, false},
		{"plugin process p99", "proc", "p99", colOurs, true},
		{"in-process p50", "local", "p50", colLocal, false},
		{"in-process p99", "local", "p99", colLocal, true},
	} {
		s := series{name: v.name, color: v.color, dashed: v.dashed}
		for _, p := range sizes {
			med, lo, hi, n := res.stat(fmt.Sprintf("rt.%s.%d.%s", v.side, p, v.q))
			if n == 0 {
				continue
			}
			s.xs, s.ys, s.lo, s.hi = append(s.xs, float64(p)), append(s.ys, med), append(s.lo, lo), append(s.hi, hi)
		}
		if len(s.xs) >= 2 {
			out = append(out, s)
		}
	}
	return out
}

func rebuildSeries(res *Results, cfg Config) []series {
	s := series{name: "rebuild", color: colOurs}
	for _, n := range cfg.RebuildSizes {
		med, lo, hi, k := res.stat("rebuild." + strconv.Itoa(n))
		if k == 0 {
			continue
		}
		s.xs, s.ys, s.lo, s.hi = append(s.xs, float64(n)), append(s.ys, med), append(s.lo, lo), append(s.hi, hi)
	}
	if len(s.xs) == 0 {
		return nil
	}
	// A line of slope 1 through the first point: linear growth.
	lin := series{name: "linear", color: colRaw, dashed: true}
	for _, x := range s.xs {
		lin.xs, lin.ys = append(lin.xs, x), append(lin.ys, s.ys[0]*x/s.xs[0])
	}
	return []series{s, lin}
}

func rssSeries(res *Results, cfg Config) []series {
	s := series{name: "qtasksd VmRSS peak per phase", color: colOurs}
	for i := range cfg.RSSPhases {
		med, lo, hi, n := res.stat("qtasksd.rss.phase" + strconv.Itoa(i+1))
		if n == 0 {
			continue
		}
		s.xs, s.ys, s.lo, s.hi = append(s.xs, float64((i+1)*cfg.RSSTasks)), append(s.ys, med), append(s.lo, lo), append(s.hi, hi)
	}
	if len(s.xs) < 2 {
		return nil
	}
	target := series{name: "target 150 MB", color: colAsynq, dashed: true, xs: []float64{s.xs[0], s.xs[len(s.xs)-1]}, ys: []float64{150, 150}}
	return []series{s, target}
}

func svgOpen(s *strings.Builder, w, h float64) {
	fmt.Fprintf(s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n", w, h, w, h)
	fmt.Fprintf(s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
}

func barChart(s *strings.Builder, x0, y0, w, h float64, title, subtitle string, bars []bar) {
	const labelW, top, rowH = 250.0, 50.0, 30.0
	fmt.Fprintf(s, `<text x="%.0f" y="%.0f" font-size="13" font-weight="bold" %s>%s</text>`+"\n", x0+10, y0+20, fontFamily, html.EscapeString(title))
	fmt.Fprintf(s, `<text x="%.0f" y="%.0f" font-size="11" fill="#57606a" %s>%s</text>`+"\n", x0+10, y0+36, fontFamily, html.EscapeString(subtitle))
	maxV := 0.0
	for _, b := range bars {
		maxV = math.Max(maxV, math.Max(b.value, b.hi))
	}
	top10 := niceCeil(maxV)
	plotW := w - labelW - 40
	sx := func(v float64) float64 { return x0 + labelW + v/top10*plotW }
	// Grid.
	for _, t := range linearTicks(0, top10) {
		x := sx(t)
		fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d0d7de" stroke-width="1"/>`+"\n", x, y0+top-8, x, y0+top+rowH*float64(len(bars)))
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="#57606a" %s>%s</text>`+"\n", x, y0+top+rowH*float64(len(bars))+14, fontFamily, human(t))
	}
	for i, b := range bars {
		y := y0 + top + float64(i)*rowH
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="12" text-anchor="end" %s>%s</text>`+"\n", x0+labelW-8, y+rowH/2+4, fontFamily, html.EscapeString(b.label))
		fmt.Fprintf(s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", sx(0), y+5, sx(b.value)-sx(0), rowH-10, b.color)
		if b.hi > b.lo {
			fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black" stroke-width="1"/>`+"\n", sx(b.lo), y+rowH/2, sx(b.hi), y+rowH/2)
			for _, v := range []float64{b.lo, b.hi} {
				fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black" stroke-width="1"/>`+"\n", sx(v), y+9, sx(v), y+rowH-9)
			}
		}
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="11" %s>%s</text>`+"\n", sx(math.Max(b.value, b.hi))+6, y+rowH/2+4, fontFamily, human(b.value))
	}
}

func lineChart(s *strings.Builder, x0, y0 float64, title, xlabel, ylabel string, logX, logY bool, ss []series) {
	const left, right, top, bottom = 60.0, 20.0, 40.0, 80.0
	pw, ph := panelWidth-left-right, panelHeight-top-bottom
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, sr := range ss {
		for i := range sr.xs {
			minX, maxX = math.Min(minX, sr.xs[i]), math.Max(maxX, sr.xs[i])
			lo, hi := sr.ys[i], sr.ys[i]
			if sr.lo != nil {
				lo, hi = sr.lo[i], sr.hi[i]
			}
			minY, maxY = math.Min(minY, lo), math.Max(maxY, hi)
		}
	}
	var fx, fy func(float64) float64
	var xt, yt []float64
	if logX {
		lo, hi := math.Floor(math.Log10(minX)), math.Ceil(math.Log10(maxX))
		if hi == lo {
			hi++
		}
		fx = func(v float64) float64 { return x0 + left + (math.Log10(v)-lo)/(hi-lo)*pw }
		xt = logTicks(lo, hi)
	} else {
		lo, hi := 0.0, maxX
		if hi == lo {
			hi = lo + 1
		}
		fx = func(v float64) float64 { return x0 + left + (v-lo)/(hi-lo)*pw }
		for _, sr := range ss {
			xt = sr.xs
			break
		}
	}
	if logY {
		lo, hi := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
		if hi == lo {
			hi++
		}
		fy = func(v float64) float64 { return y0 + top + ph - (math.Log10(v)-lo)/(hi-lo)*ph }
		yt = logTicks(lo, hi)
	} else {
		hi := niceCeil(maxY)
		fy = func(v float64) float64 { return y0 + top + ph - v/hi*ph }
		yt = linearTicks(0, hi)
	}
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="13" font-weight="bold" %s>%s</text>`+"\n", x0+10, y0+22, fontFamily, html.EscapeString(title))
	for _, t := range yt {
		y := fy(t)
		fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d0d7de"/>`+"\n", x0+left, y, x0+left+pw, y)
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="end" fill="#57606a" %s>%s</text>`+"\n", x0+left-4, y+3, fontFamily, human(t))
	}
	for _, t := range xt {
		x := fx(t)
		fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d0d7de"/>`+"\n", x, y0+top, x, y0+top+ph)
		label := human(t)
		switch {
		case logX && xlabel == "payload bytes":
			label = decimalBytes(t)
		case t == math.Trunc(t) && t < 1000:
			label = strconv.Itoa(int(t))
		}
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="#57606a" %s>%s</text>`+"\n", x, y0+top+ph+14, fontFamily, label)
	}
	fmt.Fprintf(s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#57606a"/>`+"\n", x0+left, y0+top, pw, ph)
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle" %s>%s</text>`+"\n", x0+left+pw/2, y0+top+ph+30, fontFamily, html.EscapeString(xlabel))
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle" transform="rotate(-90 %.1f %.1f)" %s>%s</text>`+"\n",
		x0+14, y0+top+ph/2, x0+14, y0+top+ph/2, fontFamily, html.EscapeString(ylabel))
	for i, sr := range ss {
		var pts []string
		for j := range sr.xs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", fx(sr.xs[j]), fy(sr.ys[j])))
		}
		dash := ""
		if sr.dashed {
			dash = ` stroke-dasharray="5,4"`
		}
		fmt.Fprintf(s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), sr.color, dash)
		for j := range sr.xs {
			x := fx(sr.xs[j])
			fmt.Fprintf(s, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x, fy(sr.ys[j]), sr.color)
			if sr.lo != nil && sr.hi[j] > sr.lo[j] {
				fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, fy(sr.lo[j]), x, fy(sr.hi[j]), sr.color)
			}
		}
		// Legend below the plot, two columns.
		lx := x0 + left + float64(i%2)*pw/2
		ly := y0 + top + ph + 46 + float64(i/2)*14
		fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly-4, lx+18, ly-4, sr.color, dash)
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="10" %s>%s</text>`+"\n", lx+22, ly, fontFamily, html.EscapeString(sr.name))
	}
}

// decimalBytes labels a power of ten of bytes: 100 B, 1 kB, 10 kB, ...
func decimalBytes(v float64) string {
	switch {
	case v >= 1e6:
		return human(v/1e6) + " MB"
	case v >= 1e3:
		return strconv.Itoa(int(v/1e3)) + " kB"
	}
	return strconv.Itoa(int(v)) + " B"
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func linearTicks(lo, hi float64) []float64 {
	step := niceCeil((hi - lo) / 5)
	var t []float64
	for v := lo; v <= hi+step/1000; v += step {
		t = append(t, v)
	}
	return t
}

func logTicks(lo, hi float64) []float64 {
	var t []float64
	for e := lo; e <= hi; e++ {
		t = append(t, math.Pow(10, e))
	}
	return t
}
