package console

import (
	"embed"
	"io/fs"
	"net/http"
)

// static is the web UI: one page, a stylesheet and a script, no build step
// (no Node toolchain to run qtasksd or to change the page).
//
//go:embed static
var static embed.FS

// ui serves the page at / and its assets; any other path is a 404 (the
// page routes with the URL's fragment, #/task/ID, so a deep link is /).
func ui() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the console's pages are read with GET", http.StatusMethodNotAllowed)
			return
		}
		switch r.URL.Path {
		case "/", "/app.js", "/style.css", "/favicon.svg":
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
		files.ServeHTTP(w, r)
	})
}
