package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/executor"
)

// benchRSS runs a real qtasksd (built from ../cmd/qtasksd) as it runs by
// default (embedded NATS server with file storage, its SQLite projector),
// every trigger recorded, worker concurrency Config.Concurrency, and submits RSSPhases phases of RSSTasks
// "add" tasks from a client in this process, waiting for every final
// record after each phase. It samples VmRSS of the qtasksd process every
// 50 ms and reads VmHWM (its peak RSS) at the end. The history grows with
// each phase (27 events per task); RSS is flat when the last phase's
// peak is no higher than the second phase's (the first includes start-up
// growth).
func benchRSS(ctx context.Context, h *Harness, rep int) error {
	args := []string{"--concurrency", strconv.Itoa(h.cfg.Concurrency), "--record", "all"}
	httpAddr := ""
	if h.cfg.QtasksdHeap != "" {
		port, err := freePort()
		if err != nil {
			return err
		}
		httpAddr = "127.0.0.1:" + strconv.Itoa(port)
		args = append(args, "--http", httpAddr, "--pprof")
	}
	qd, err := h.startQtasksd(args...)
	if err != nil {
		return err
	}
	defer qd.stop()
	pid := qd.pid

	client, err := bus.Open(ctx, bus.Config{URL: qd.url, Name: "bench-client", Logger: h.quiet})
	if err != nil {
		return err
	}
	defer client.Close()
	app, err := executor.New(client, &executor.Config{Logger: h.quiet})
	if err != nil {
		return err
	}
	w, err := watchFinal(client.Conn())
	if err != nil {
		return err
	}
	defer w.stop()

	var mu sync.Mutex
	phasePeak := int64(0)
	quit := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if kb, err := procStatusKB(pid, "VmRSS"); err == nil {
				mu.Lock()
				phasePeak = max(phasePeak, kb)
				mu.Unlock()
			}
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	defer func() {
		select {
		case <-quit:
		default:
			close(quit)
		}
		<-sampled
	}()
	submit := func(ctx context.Context, i int) error {
		_, err := app.Submit(ctx, "add", map[string]int{"a": i, "b": 1}, nil)
		return err
	}
	var peaks []int64
	total := 0
	cpu0 := pidCPU(pid) + selfCPU()
	t0 := time.Now()
	var rates []float64
	for range h.cfg.RSSPhases {
		mu.Lock()
		phasePeak = 0
		mu.Unlock()
		p0 := time.Now()
		w.expect(h.cfg.RSSTasks)
		if _, err := submitAll(ctx, h.cfg.RSSTasks, h.cfg.Submitters, submit); err != nil {
			return err
		}
		if err := w.wait(ctx, 5*time.Minute); err != nil {
			return err
		}
		total += h.cfg.RSSTasks
		rates = append(rates, float64(h.cfg.RSSTasks)/time.Since(p0).Seconds())
		mu.Lock()
		peaks = append(peaks, phasePeak)
		mu.Unlock()
		if httpAddr != "" {
			if err := saveURL(ctx, "http://"+httpAddr+"/debug/pprof/heap", fmt.Sprintf("%s.phase%d", h.cfg.QtasksdHeap, len(peaks))); err != nil {
				return err
			}
		}
	}
	el := time.Since(t0)
	cpu := pidCPU(pid) + selfCPU() - cpu0
	if h.cfg.QtasksdHeap != "" {
		if err := saveStreamSizes(filepath.Join(qd.dir, "jetstream"), h.cfg.QtasksdHeap+".streams"); err != nil {
			return err
		}
	}
	hwm, err := procStatusKB(pid, "VmHWM")
	if err != nil {
		return err
	}
	h.add("qtasksd.rss", float64(hwm)/1024)
	ref := peaks[0]
	if len(peaks) >= 3 {
		ref = peaks[1]
	}
	if ref > 0 {
		h.add("qtasksd.rss.growth", float64(peaks[len(peaks)-1])/float64(ref))
	}
	h.add("qtasksd.tasks", float64(total)/el.Seconds())
	h.add("qtasksd.cpu", cpuPerTask(cpu, total))
	for i, p := range peaks {
		h.add("qtasksd.rss.phase"+strconv.Itoa(i+1), float64(p)/1024)
		h.add("qtasksd.tasks.phase"+strconv.Itoa(i+1), rates[i])
	}
	return nil
}

// saveStreamSizes writes the bytes on disk of each stream in the embedded
// server's store directory dir (the server adds "jetstream") to the file path, one "name bytes" a line.
func saveStreamSizes(dir, path string) error {
	var b strings.Builder
	streams, _ := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams", "*"))
	for _, s := range streams {
		size := int64(0)
		_ = filepath.WalkDir(s, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					size += fi.Size()
				}
			}
			return nil
		})
		fmt.Fprintf(&b, "%s %d\n", filepath.Base(s), size)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// saveURL writes the body of a GET of url to the file path.
func saveURL(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// qtasksd is a qtasksd process the harness started.
type qtasksd struct {
	dir  string // its --data-dir
	url  string
	pid  int
	stop func()
}

// startQtasksd runs qtasksd (built from ../cmd/qtasksd) on its embedded
// NATS server with file storage in a new directory and a free port, HTTP
// off, with the extra flags given; it returns once qtasksd says it is
// ready.
func (h *Harness) startQtasksd(extra ...string) (*qtasksd, error) {
	bins, err := h.binaries()
	if err != nil {
		return nil, err
	}
	dir, err := h.dir("qtasksd-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append([]string{"run", "--demo", "--data-dir", dir, "--db", filepath.Join(dir, "qtasks.db"), "--port", strconv.Itoa(port),
		"--http", "", "--log-level", "info"}, extra...)
	cmd := exec.Command(bins["qtasksd"], args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
	var tail lastLines
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		once := sync.Once{}
		var logf *os.File
		if h.cfg.QtasksdHeap != "" { // qtasksd's whole stderr, GODEBUG=gctrace=1 included
			logf, _ = os.OpenFile(h.cfg.QtasksdHeap+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			defer logf.Close()
		}
		for sc.Scan() {
			if logf != nil {
				fmt.Fprintln(logf, sc.Text())
			}
			tail.add(sc.Text())
			if strings.Contains(sc.Text(), `"qtasksd ready"`) {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case <-ready:
	case <-exited:
		return nil, fmt.Errorf("qtasksd exited: %s", tail.String())
	case <-time.After(wait):
		stop()
		return nil, errors.New("qtasksd not ready in time")
	}
	return &qtasksd{dir: dir, url: "nats://127.0.0.1:" + strconv.Itoa(port), pid: cmd.Process.Pid, stop: stop}, nil
}

// lastLines keeps the last lines written, for error messages.
type lastLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *lastLines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
	if len(l.lines) > 10 {
		l.lines = l.lines[1:]
	}
}

func (l *lastLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
