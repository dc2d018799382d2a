package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// defaultMemoryLimitMiB is qtasksd's soft memory limit where the machine
// sets none lower. Most of its live heap is the embedded server's cache of
// the event log's blocks, each kept until ten seconds after it was last
// read: about ten seconds of the log's writes (some 75-90 MB at 400 tasks/s
// with every trigger recorded, ~19 KB a task); without a limit the GC lets
// the heap grow to twice the live set. At 192 MiB the peak RSS of the bench
// harness's load is 223 MB; at 160, 191 MB for 5% more CPU per task; at
// 128, 159 MB for 6-20% more (docs/BENCHMARKS-HARNESS.md, "qtasksd memory
// after the exchange's rebuild"). Under a heavier load the GC spends more
// CPU (at most half of it) before the limit gives.
const defaultMemoryLimitMiB = 192

// cgroupShare is the part of a cgroup's memory limit qtasksd's default
// soft limit takes at most: the rest is for what the Go limit does not
// count (the binary's pages, SQLite's cache) and for the GC to act before
// the kernel's OOM killer does.
const cgroupShare = 0.75

// memoryLimitDefault is --memory-limit's default: defaultMemoryLimitMiB,
// or three quarters of the memory limit of the cgroup qtasksd runs in
// (a container's, a systemd unit's MemoryMax) when that is lower, so that
// in a small container the GC works harder before the kernel kills it.
func memoryLimitDefault() int {
	cg, _ := os.ReadFile("/proc/self/cgroup")
	return memoryLimitFor(cgroupMemoryMax("/sys/fs/cgroup", cg))
}

// memoryLimitFor is the default soft limit in MiB under a cgroup memory
// limit of limit bytes (0: none).
func memoryLimitFor(limit int64) int {
	if limit <= 0 {
		return defaultMemoryLimitMiB
	}
	return max(1, min(defaultMemoryLimitMiB, int(float64(limit)*cgroupShare)>>20))
}

// cgroupMemoryMax is the memory limit in bytes of the cgroup that
// procCgroup (the contents of /proc/self/cgroup) names, under the cgroup
// file system mounted at root: cgroup v2's memory.max, or v1's
// memory.limit_in_bytes; 0 when there is none or it cannot be read. In a
// container the named path is often not visible: the root's own files are
// then the container's.
func cgroupMemoryMax(root string, procCgroup []byte) int64 {
	var files []string
	sc := bufio.NewScanner(bytes.NewReader(procCgroup))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "": // v2
			files = append(files, filepath.Join(root, parts[2], "memory.max"), filepath.Join(root, "memory.max"))
		case hasController(parts[1], "memory"): // v1
			files = append(files, filepath.Join(root, "memory", parts[2], "memory.limit_in_bytes"), filepath.Join(root, "memory", "memory.limit_in_bytes"))
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f) //nolint:gosec // a cgroup file under the fixed cgroup root, named by /proc/self/cgroup
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			continue
		}
		// v1 writes "no limit" as the largest page-aligned int64.
		if n >= 1<<62 {
			return 0
		}
		return n
	}
	return 0
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}
