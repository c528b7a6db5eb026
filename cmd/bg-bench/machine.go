package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of /proc/*/stat times (100 on every Linux architecture Go
// supports in practice).
const clkTck = 100

// Machine describes where the numbers were measured.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	MemoryGB  int    `json:"memory_gb"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Postgres  string `json:"postgres"`
	Versitygw string `json:"versitygw"`
}

func (b *bench) machine(ctx context.Context) Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(data))
		if len(f) > 1 {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			m.MemoryGB = int((kb + 512*1024) / (1024 * 1024))
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	if b.db != nil {
		_ = b.db.QueryRow(ctx, `SHOW server_version`).Scan(&m.Postgres)
	}
	// The binary reports "git"; the version is the one tools/go.mod pins.
	if data, err := os.ReadFile(filepath.Join(b.repo, "tools", "go.mod")); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/versity/versitygw" {
				m.Versitygw = f[1] + " (tools/go.mod)"
			}
		}
	}
	return m
}

// cpuTimes is the machine's cumulative CPU time from /proc/stat (all cores): busy
// (everything but idle and iowait), of which irq+softirq (loopback networking is mostly
// softirq, charged to no process) and steal (the hypervisor's).
type cpuTimes struct{ busy, irq, steal, total float64 }

func machineCPU() cpuTimes {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return parseCPULine(line)
}

// parseCPULine reads /proc/stat's "cpu" line (clock ticks) into seconds.
func parseCPULine(line string) cpuTimes {
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var t cpuTimes
	if len(f) == 0 {
		return t
	}
	for i, s := range f[1:] {
		v, _ := strconv.ParseFloat(s, 64)
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
		switch i {
		case 5, 6:
			t.irq += v
		case 7:
			t.steal += v
		}
	}
	t.busy /= clkTck
	t.irq /= clkTck
	t.steal /= clkTck
	t.total /= clkTck
	return t
}

// busyFraction is the share of all cores that was busy between two samples.
func busyFraction(a, b cpuTimes) float64 {
	if b.total <= a.total {
		return 0
	}
	return (b.busy - a.busy) / (b.total - a.total)
}

// procCPU is a process's user+system CPU time from /proc/PID/stat.
func procCPU(pid int) time.Duration { return procCPUFields(pid, false) }

// procCPUFields reads utime+stime, plus the reaped children's cutime+cstime when
// children is set.
func procCPUFields(pid int, children bool) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	return parseProcStat(string(data), children)
}

// parseProcStat reads utime+stime (and cutime+cstime when children is set) from the
// text of /proc/PID/stat.
func parseProcStat(s string, children bool) time.Duration {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:]) // from field 3 (state)
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	fields := []int{11, 12} // utime, stime (fields 14, 15)
	if children {
		fields = append(fields, 13, 14) // cutime, cstime
	}
	for _, i := range fields {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks * int64(time.Second) / clkTck)
}

// procRSS returns VmRSS and VmHWM (peak) in KiB from /proc/PID/status.
func procRSS(pid int) (rss, hwm int64) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// selfCPU is this process's CPU time (the latency proxy runs here).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postgresCPU sums the CPU time of the postmaster, its exited backends (reaped children)
// and its live backends.
func postgresCPU(postmaster int) time.Duration {
	total := procCPUFields(postmaster, true)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total
	}
	pm := strconv.Itoa(postmaster)
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+2:])
		if len(f) > 1 && f[1] == pm { // ppid
			pid, _ := strconv.Atoi(e.Name())
			total += procCPU(pid)
		}
	}
	return total
}
