package executor

// Held reports how many pulled tasks app's worker holds waiting for a free
// slot (0 when no worker runs). For tests that need the worker's queue
// filled before they let it go on.
func Held(app *App) int {
	app.mu.RLock()
	w := app.worker
	app.mu.RUnlock()
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.q.Len()
}

// Paused reports whether app's worker has its queue paused (false when no
// worker runs).
func Paused(app *App) bool {
	app.mu.RLock()
	w := app.worker
	app.mu.RUnlock()
	if w == nil {
		return false
	}
	paused, _ := w.ctl.pausedNow()
	return paused
}
