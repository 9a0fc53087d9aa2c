package main

import (
	"bytes"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// histogram records durations in microseconds with about 3% precision, in
// shards so that thousands of stream goroutines record without contending
// on one cache line.
type histogram struct {
	shards [histShards]histShard
}

const (
	histShards = 64
	histSub    = 32 // buckets per power of two above 64 µs
	histBins   = 64 + 40*histSub
)

type histShard struct {
	bins [histBins]atomic.Uint64
	max  atomic.Uint64
	_    [64]byte // keep shards' max on separate cache lines
}

func histBin(us uint64) int {
	if us < 64 {
		return int(us)
	}
	shift := bits.Len64(us) - 6 // us>>shift is in [32, 63]
	i := 64 + (shift-1)*histSub + int(us>>shift) - 32
	return min(i, histBins-1)
}

// histLow is the smallest value of bin i.
func histLow(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	shift := (i-64)/histSub + 1
	return uint64((i-64)%histSub+32) << shift
}

func (h *histogram) record(shard int, d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	s := &h.shards[shard%histShards]
	s.bins[histBin(us)].Add(1)
	for {
		m := s.max.Load()
		if us <= m || s.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// summary is the merged view: count, quantiles and max.
type summary struct {
	count uint64
	bins  [histBins]uint64
	max   uint64
}

func (h *histogram) summary() summary {
	var s summary
	for i := range h.shards {
		sh := &h.shards[i]
		for b := range sh.bins {
			n := sh.bins[b].Load()
			s.bins[b] += n
			s.count += n
		}
		s.max = max(s.max, sh.max.Load())
	}
	return s
}

// quantile is the q-quantile (0 < q <= 1), as the middle of its bin.
func (s summary) quantile(q float64) time.Duration {
	if s.count == 0 {
		return 0
	}
	rank := uint64(q*float64(s.count) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, n := range s.bins {
		seen += n
		if seen >= rank {
			lo, hi := histLow(i), histLow(i+1)
			if i == histBins-1 {
				hi = lo
			}
			us := min((lo+hi)/2, s.max)
			return time.Duration(us) * time.Microsecond
		}
	}
	return time.Duration(s.max) * time.Microsecond
}

// add merges o into s.
func (s *summary) add(o summary) {
	for i, n := range o.bins {
		s.bins[i] += n
	}
	s.count += o.count
	s.max = max(s.max, o.max)
}

func (s summary) maxDuration() time.Duration { return time.Duration(s.max) * time.Microsecond }

// procSample is one reading of a process's memory and CPU time.
type procSample struct {
	rssKiB int64
	cpu    time.Duration // utime + stime
	writes int64         // write system calls (syscw in /proc/PID/io), -1 if unreadable
	// wakeups is the voluntary context switches of all the process's
	// threads (/proc/PID/task/*/status): each is a thread that went to
	// sleep waiting and was woken again. -1 if unreadable.
	wakeups int64
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times; 100 on every
// Linux this runs on.
const clockTick = 10 * time.Millisecond

// readProc reads VmRSS from /proc/PID/status and utime+stime from
// /proc/PID/stat.
func readProc(pid int) (procSample, error) {
	var p procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, fmt.Errorf("server pid %d: %w", pid, err)
	}
	for line := range bytes.Lines(status) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				p.rssKiB, _ = strconv.ParseInt(string(f[0]), 10, 64)
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, fmt.Errorf("server pid %d: %w", pid, err)
	}
	// The command name may hold spaces and parentheses: fields count from
	// the last ')'. utime and stime are fields 14 and 15, so 12 and 13 after
	// it.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return p, fmt.Errorf("server pid %d: unreadable /proc stat", pid)
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return p, fmt.Errorf("server pid %d: short /proc stat", pid)
	}
	ut, _ := strconv.ParseInt(string(f[11]), 10, 64)
	st, _ := strconv.ParseInt(string(f[12]), 10, 64)
	p.cpu = time.Duration(ut+st) * clockTick
	p.writes = -1
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for line := range bytes.Lines(io) {
			if rest, ok := bytes.CutPrefix(line, []byte("syscw:")); ok {
				p.writes, _ = strconv.ParseInt(string(bytes.TrimSpace(rest)), 10, 64)
			}
		}
	}
	p.wakeups = readWakeups(pid)
	return p, nil
}

// readWakeups sums voluntary_ctxt_switches over pid's threads, or returns
// -1. /proc/PID/status alone counts only the main thread's.
func readWakeups(pid int) int64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return -1
	}
	var n int64
	for _, t := range tasks {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // a thread that ended meanwhile
		}
		for line := range bytes.Lines(status) {
			if rest, ok := bytes.CutPrefix(line, []byte("voluntary_ctxt_switches:")); ok {
				v, _ := strconv.ParseInt(string(bytes.TrimSpace(rest)), 10, 64)
				n += v
			}
		}
	}
	return n
}

// machineCPU reads the whole machine's busy and total CPU time from
// /proc/stat, to tell how much of it other processes took during a run.
func machineCPU() (busy, total time.Duration, err error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 5 || string(f[0]) != "cpu" {
		return 0, 0, fmt.Errorf("unreadable /proc/stat")
	}
	var sum, idle int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(string(v), 10, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal; guest is in user
			sum += n
		}
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return time.Duration(sum-idle) * clockTick, time.Duration(sum) * clockTick, nil
}

// readProcs samples every pid; a pid that cannot be read is an error, since
// figures without it would mislead.
func readProcs(pids []int) ([]procSample, error) {
	out := make([]procSample, len(pids))
	for i, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

func sumRSS(s []procSample) (kib int64) {
	for _, p := range s {
		kib += p.rssKiB
	}
	return kib
}

// sumWrites adds up write system calls, or returns -1 if any is unknown.
func sumWrites(s []procSample) (n int64) {
	for _, p := range s {
		if p.writes < 0 {
			return -1
		}
		n += p.writes
	}
	return n
}

// sumWakeups adds up wake-ups, or returns -1 if any is unknown.
func sumWakeups(s []procSample) (n int64) {
	for _, p := range s {
		if p.wakeups < 0 {
			return -1
		}
		n += p.wakeups
	}
	return n
}

func sumCPU(s []procSample) (d time.Duration) {
	for _, p := range s {
		d += p.cpu
	}
	return d
}

// countFDs is the number of files the processes hold open (entries of
// /proc/PID/fd), -1 if one cannot be read.
func countFDs(pids []int) int {
	n := 0
	for _, pid := range pids {
		entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return -1
		}
		n += len(entries)
	}
	return n
}
