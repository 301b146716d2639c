package procstat

import (
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/eventually"
)

// childEnv makes the test binary a child process that lives until its stdin
// is closed, for the tests that need a process that exits.
const childEnv = "PROCSTAT_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseStatusReadsRSSAndHWMInBytes(t *testing.T) {
	status := "Name:\torigin\nVmPeak:\t  900000 kB\nVmHWM:\t   204800 kB\nVmRSS:\t   102400 kB\nThreads:\t8\n"
	st, err := parseStatus(strings.NewReader(status))
	if err != nil {
		t.Fatalf("parseStatus: %v", err)
	}
	if want := (Status{RSS: 100 << 20, HWM: 200 << 20}); st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
}

func TestParseStatusRejectsStatusWithoutMemory(t *testing.T) {
	// Kernel threads and zombies have no Vm* lines; a zero RSS must not pass as a measurement.
	if st, err := parseStatus(strings.NewReader("Name:\tkthreadd\nState:\tS\n")); err == nil {
		t.Errorf("parseStatus accepted a status without VmRSS/VmHWM: %+v", st)
	}
}

func TestParseStatusRejectsMalformedLines(t *testing.T) {
	for _, status := range []string{
		"VmHWM:\t 2048 kB\nVmRSS:\t 1024 MB\n",
		"VmHWM:\t 2048 kB\nVmRSS:\t lots kB\n",
		"VmHWM:\t 2048 kB\nVmRSS:\n",
	} {
		if st, err := parseStatus(strings.NewReader(status)); err == nil {
			t.Errorf("parseStatus(%q) = %+v, want an error", status, st)
		}
	}
}

func TestParseStatSumsUserAndSystemTime(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	for _, stat := range []string{
		"4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0\n",
		"4242 ((a) b)) R 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 7 7 20 0 9 0 100 0 0",
		"4242 (origin) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0",
	} {
		got, err := parseStat(stat)
		if err != nil {
			t.Fatalf("parseStat(%q): %v", stat, err)
		}
		if want := 3 * time.Second; got != want {
			t.Errorf("parseStat(%q) = %s, want %s (300 ticks at 100 Hz)", stat, got, want)
		}
	}
}

func TestParseStatRejectsMalformedLines(t *testing.T) {
	for _, stat := range []string{
		"4242 (truncated) S 1 2",
		"4242 no name S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0",
		"4242 (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 many 50 0 0 20 0 9 0 100 0 0",
	} {
		if d, err := parseStat(stat); err == nil {
			t.Errorf("parseStat(%q) = %s, want an error", stat, d)
		}
	}
}

func TestReadStatusAndCPUOfThisProcess(t *testing.T) {
	st, err := ReadStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.RSS <= 0 || st.HWM < st.RSS {
		t.Errorf("own status %+v: want RSS > 0 and HWM >= RSS", st)
	}
	// Burn CPU until the kernel has counted at least a tick of it.
	var cpu time.Duration
	if werr := eventually.Wait(eventually.Timeout, func() bool {
		for i := 0; i < 1e6; i++ {
			runtime.Gosched()
		}
		if cpu, err = CPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		return cpu > 0
	}); werr != nil {
		t.Errorf("waiting for own CPU time to count a busy loop: %v; still %s", werr, cpu)
	}
}

// child is this test binary as a process that lives until its stdin is
// closed (GORACE: the race detector would keep it a second more at exit).
func child() *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1", "GORACE=atexit_sleep_ms=0")
	return cmd
}

// exitedPID starts a child and reaps it: its PID no longer exists.
func exitedPID(t *testing.T) int {
	t.Helper()
	cmd := child()
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestMissingProcessIsAnError(t *testing.T) {
	pid := exitedPID(t)
	if st, err := ReadStatus(pid); err == nil {
		t.Errorf("ReadStatus of exited pid %d = %+v, want an error", pid, st)
	}
	if d, err := CPU(pid); err == nil {
		t.Errorf("CPU of exited pid %d = %s, want an error", pid, d)
	}
	s := StartSampler([]int{pid}, time.Millisecond)
	if peaks := s.Stop(); len(peaks) != 1 || peaks[0] != 0 {
		t.Errorf("peaks of an exited pid = %v, want [0]", peaks)
	}
	if s.Err() == nil {
		t.Error("sampling an exited pid gave no error")
	}
}

func TestSamplerPeakIsAtLeastASampleTakenMeanwhile(t *testing.T) {
	// Memory that stays resident while sampling, and no freed memory the
	// runtime could hand back meanwhile, so the RSS does not fall.
	buf := make([]byte, 32<<20)
	for i := range buf {
		buf[i] = 1
	}
	runtime.GC()
	debug.FreeOSMemory()

	s := StartSampler([]int{os.Getpid()}, time.Millisecond)
	st, err := ReadStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Stop samples a last time, after st was read.
	peaks := s.Stop()
	runtime.KeepAlive(buf)
	if err := s.Err(); err != nil {
		t.Fatalf("sampling this process: %v", err)
	}
	if len(peaks) != 1 {
		t.Fatalf("got %d peaks for one pid", len(peaks))
	}
	if peaks[0] < 32<<20 || peaks[0] < st.RSS {
		t.Errorf("peak %d, want at least the 32 MiB held and the RSS %d read meanwhile", peaks[0], st.RSS)
	}
	if again := s.Stop(); len(again) != 1 || again[0] != peaks[0] {
		t.Errorf("second Stop = %v, want %v", again, peaks)
	}
}

func TestSamplerKeepsThePeakOfAProcessThatExits(t *testing.T) {
	cmd := child()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	child := cmd.Process.Pid

	s := StartSampler([]int{os.Getpid(), child}, time.Millisecond)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	// The sampling goroutine meets the child gone (Stop's last sample
	// would too; this waits for one taken while sampling runs).
	if err := eventually.Wait(eventually.Timeout, func() bool { return s.Err() != nil }); err != nil {
		t.Errorf("waiting for the sampler to report the child that exited while sampled: %v", err)
	}
	peaks := s.Stop()
	if len(peaks) != 2 || peaks[0] <= 0 || peaks[1] <= 0 {
		t.Errorf("peaks %v, want a positive peak for this process and for the child sampled before it exited", peaks)
	}
}

func TestCPUDuringCountsTheWorkAndPassesErrors(t *testing.T) {
	self := os.Getpid()
	got, err := CPUDuring(self, func() error {
		// Spin until the kernel has counted 30 ms of this process's CPU.
		start, err := CPU(self)
		if err != nil {
			return err
		}
		for now := start; now-start < 30*time.Millisecond; now, err = CPU(self) {
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("CPUDuring: %v", err)
	}
	if got < 30*time.Millisecond {
		t.Errorf("CPUDuring a 30 ms spin = %s, want at least 30ms", got)
	}
	if _, err := CPUDuring(self, func() error { return io.ErrUnexpectedEOF }); err != io.ErrUnexpectedEOF {
		t.Errorf("CPUDuring with a failing fn: error %v, want fn's own", err)
	}
}

func TestLoadAvgHasThreeFigures(t *testing.T) {
	if f := strings.Fields(LoadAvg()); len(f) != 3 {
		t.Errorf("LoadAvg() = %q, want the 1, 5 and 15 minute averages", LoadAvg())
	}
}
