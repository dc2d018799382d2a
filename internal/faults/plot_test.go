package faults_test

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// The soak's plot is SVG written by hand, as bench/plot.go writes the
// benchmarks' plots: no plotting dependency.

const (
	plotFont   = `font-family="DejaVu Sans, Helvetica, Arial, sans-serif"`
	plotWidth  = 900.0
	plotHeight = 300.0
)

var plotColors = []string{"#1f6feb", "#1a7f37", "#8250df", "#d1242f", "#bf8700", "#57606a", "#54aeff", "#e16f24"}

// line is one series of a panel.
type line struct {
	name   string
	xs, ys []float64
}

// marker is a vertical line at x (a fault), labelled.
type marker struct {
	x     float64
	label string
}

// panel draws a line chart at (x0, y0), plotWidth × plotHeight.
func panel(s *strings.Builder, x0, y0 float64, title, xlabel, ylabel string, lines []line, marks []marker) {
	const left, right, top, bottom = 60.0, 170.0, 30.0, 40.0
	w, h := plotWidth-left-right, plotHeight-top-bottom
	xmax, ymax := 0.0, 0.0
	for _, l := range lines {
		for i := range l.xs {
			xmax, ymax = math.Max(xmax, l.xs[i]), math.Max(ymax, l.ys[i])
		}
	}
	if xmax == 0 {
		xmax = 1
	}
	ymax = niceCeil(ymax * 1.05)
	px := func(x float64) float64 { return x0 + left + x/xmax*w }
	py := func(y float64) float64 { return y0 + top + h - y/ymax*h }
	fmt.Fprintf(s, `<text x="%.0f" y="%.0f" font-size="14" font-weight="bold" %s>%s</text>`+"\n", x0+left, y0+18, plotFont, html.EscapeString(title))
	for i := 0; i <= 5; i++ {
		y := ymax * float64(i) / 5
		fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d0d7de"/>`+"\n", px(0), py(y), px(xmax), py(y))
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end" %s>%s</text>`+"\n", px(0)-5, py(y)+4, plotFont, trimFloat(y))
	}
	step := niceCeil(xmax / 8)
	for x := 0.0; x <= xmax+1e-9; x += step {
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle" %s>%s</text>`+"\n", px(x), py(0)+15, plotFont, trimFloat(x))
	}
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle" %s>%s</text>`+"\n", px(xmax/2), y0+plotHeight-5, plotFont, html.EscapeString(xlabel))
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle" transform="rotate(-90 %.1f %.1f)" %s>%s</text>`+"\n",
		x0+15, y0+top+h/2, x0+15, y0+top+h/2, plotFont, html.EscapeString(ylabel))
	for _, m := range marks {
		fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d1242f" stroke-dasharray="4 3" stroke-width="1"/>`+"\n", px(m.x), py(0), px(m.x), py(ymax))
		// Written downwards from the top, inside the panel: clear of the title.
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="9" fill="#d1242f" transform="rotate(90 %.1f %.1f)" %s>%s</text>`+"\n",
			px(m.x)+3, py(ymax)+4, px(m.x)+3, py(ymax)+4, plotFont, html.EscapeString(m.label))
	}
	for i, l := range lines {
		col := plotColors[i%len(plotColors)]
		var pts []string
		for j := range l.xs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(l.xs[j]), py(l.ys[j])))
		}
		fmt.Fprintf(s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>`+"\n", strings.Join(pts, " "), col)
		ly := y0 + top + 10 + float64(i)*18
		fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", px(xmax)+15, ly, px(xmax)+35, ly, col)
		fmt.Fprintf(s, `<text x="%.1f" y="%.1f" font-size="11" %s>%s</text>`+"\n", px(xmax)+40, ly+4, plotFont, html.EscapeString(l.name))
	}
	fmt.Fprintf(s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#57606a"/>`+"\n", px(0), py(ymax), w, h)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// svg wraps panels stacked vertically, with a caption.
func svg(caption string, panels ...func(s *strings.Builder, x0, y0 float64)) string {
	var s strings.Builder
	height := plotHeight*float64(len(panels)) + 30
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n", plotWidth, height, plotWidth, height)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for i, p := range panels {
		p(&s, 0, float64(i)*plotHeight)
	}
	fmt.Fprintf(&s, `<text x="10" y="%.0f" font-size="11" fill="#57606a" %s>%s</text>`+"\n", height-10, plotFont, html.EscapeString(caption))
	s.WriteString("</svg>\n")
	return s.String()
}
