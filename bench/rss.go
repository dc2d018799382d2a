package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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
	qd, err := h.startQtasksd("--concurrency", strconv.Itoa(h.cfg.Concurrency), "--record", "all")
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
	}
	el := time.Since(t0)
	cpu := pidCPU(pid) + selfCPU() - cpu0
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

// qtasksd is a qtasksd process the harness started.
type qtasksd struct {
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
		for sc.Scan() {
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
	return &qtasksd{url: "nats://127.0.0.1:" + strconv.Itoa(port), pid: cmd.Process.Pid, stop: stop}, nil
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
