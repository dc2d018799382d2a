package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// binaries builds, once per run, the programs the harness starts as
// processes of their own: bench/internal/echoplugin (a mutator plugin),
// bench/internal/wmplugin (the same mutator on Watermill) and
// qtasksd from the main module (through the replace directive, so it is the
// working tree's).
func (h *Harness) binaries() (map[string]string, error) {
	h.binOnce.Do(func() {
		dir, err := h.dir("bin-")
		if err != nil {
			h.binErr = err
			return
		}
		t0 := time.Now()
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"./internal/echoplugin", "./internal/wmplugin", "github.com/qtasks/qtasks-go/cmd/qtasksd")
		if out, err := cmd.CombinedOutput(); err != nil {
			h.binErr = fmt.Errorf("building echoplugin and qtasksd: %v\n%s", err, out)
			return
		}
		h.bins = map[string]string{
			"echoplugin": filepath.Join(dir, "echoplugin"),
			"wmplugin":   filepath.Join(dir, "wmplugin"),
			"qtasksd":    filepath.Join(dir, "qtasksd"),
		}
		h.logf("built echoplugin, wmplugin and qtasksd in %.1fs", time.Since(t0).Seconds())
	})
	return h.bins, h.binErr
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// redisServer is a redis-server process on a free loopback port with its
// files in a temporary directory: Redis's built-in defaults otherwise (no
// config file), so the peer runs as a user would start it.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// redisServer starts Redis once per run; it is stopped when the harness
// closes.
func (h *Harness) redisServer() (*redisServer, error) {
	h.redisOnce.Do(func() {
		path, err := exec.LookPath("redis-server")
		if err != nil {
			h.redisErr = errors.New("redis-server not found: install Debian's package (apt-get install -y redis-server)")
			return
		}
		dir, err := h.dir("redis-")
		if err != nil {
			h.redisErr = err
			return
		}
		port, err := freePort()
		if err != nil {
			h.redisErr = err
			return
		}
		cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			h.redisErr = err
			return
		}
		r := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), cmd: cmd, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(r.done) }()
		h.onClose(r.stop)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if c, err := net.DialTimeout("tcp", r.addr, time.Second); err == nil {
				_, _ = c.Write([]byte("PING\r\n"))
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Close()
				if strings.HasPrefix(line, "+PONG") {
					break
				}
			}
			select {
			case <-r.done:
				log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
				h.redisErr = fmt.Errorf("redis-server exited: %s", log)
				return
			default:
			}
			if time.Now().After(deadline) {
				h.redisErr = errors.New("redis-server did not answer PING in 10s")
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		h.redis = r
		h.logf("redis-server on %s", r.addr)
	})
	return h.redis, h.redisErr
}

func (r *redisServer) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// procStatusKB reads a field (VmRSS, VmHWM) of /proc/<pid>/status in kB.
func procStatusKB(pid int, field string) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// selfCPU is the CPU time (user + system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pidCPU is the CPU time (user + system) process pid has used, from
// /proc/<pid>/stat (in clock ticks of 10 ms: Linux's USER_HZ is 100).
func pidCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(data)
	// The command name may hold spaces; fields resume after its ')'.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// cpuPerTask is the CPU µs per task of n tasks that took cpu.
func cpuPerTask(cpu time.Duration, n int) float64 {
	return float64(cpu.Microseconds()) / float64(n)
}
