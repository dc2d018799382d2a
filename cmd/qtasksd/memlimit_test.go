package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMemoryLimitDefault(t *testing.T) {
	t.Parallel()
	// write makes the file rel under root with contents s.
	write := func(t *testing.T, root, rel, s string) {
		t.Helper()
		p := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o750))
		require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
	}
	tests := []struct {
		name    string
		files   map[string]string
		cgroup  string
		wantMax int64
		wantMiB int
	}{
		{name: "V2Limit", files: map[string]string{"app/memory.max": "268435456\n"}, cgroup: "0::/app\n", wantMax: 256 << 20, wantMiB: 192},
		{name: "V2SmallLimit", files: map[string]string{"app/memory.max": "134217728\n"}, cgroup: "0::/app\n", wantMax: 128 << 20, wantMiB: 96},
		{name: "V2NoLimit", files: map[string]string{"app/memory.max": "max\n"}, cgroup: "0::/app\n", wantMiB: 192},
		{name: "V2PathHiddenInContainer", files: map[string]string{"memory.max": "134217728\n"}, cgroup: "0::/kubepods/pod1/c1\n", wantMax: 128 << 20, wantMiB: 96},
		{name: "V1Limit", files: map[string]string{"memory/svc/memory.limit_in_bytes": "209715200\n"}, cgroup: "5:cpu,cpuacct:/svc\n4:memory:/svc\n0::/\n", wantMax: 200 << 20, wantMiB: 150},
		{name: "V1NoLimit", files: map[string]string{"memory/svc/memory.limit_in_bytes": "9223372036854771712\n"}, cgroup: "4:memory:/svc\n", wantMiB: 192},
		{name: "NoCgroupFile", cgroup: "", wantMiB: 192},
		{name: "Unreadable", files: map[string]string{"app/memory.max": "lots\n"}, cgroup: "0::/app\n", wantMiB: 192},
		{name: "Tiny", files: map[string]string{"app/memory.max": "1048576\n"}, cgroup: "0::/app\n", wantMax: 1 << 20, wantMiB: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			for rel, s := range tt.files {
				write(t, root, rel, s)
			}
			got := cgroupMemoryMax(root, []byte(tt.cgroup))
			require.Equal(t, tt.wantMax, got)
			require.Equal(t, tt.wantMiB, memoryLimitFor(got))
		})
	}
}
