package buffer

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The crash tests run the buffer in a child process (this test binary,
// re-executed into TestHelperProcess), SIGKILL it at random moments, and
// check what the next Open finds against what the child reported.
const (
	helperEnv      = "BUFFER_TEST_HELPER"
	helperSyncEnv  = "BUFFER_TEST_SYNC"
	helperBatchEnv = "BUFFER_TEST_BATCH"
	helperLimit    = 3000 // appends per child, so a slow parent cannot fill the disk
)

// TestHelperProcess is the crash-test child. It appends records forever
// (up to helperLimit), printing "seq N" after each Append returns, and now
// and then acknowledges the oldest records, printing "ack N" after Ack
// returns.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("crash-test child only")
	}
	batch, _ := strconv.Atoi(os.Getenv(helperBatchEnv))
	fmt.Printf("opening\n")
	b, rec, err := Open(path, Options{
		Sync: SyncPolicy(os.Getenv(helperSyncEnv)), BatchRecords: batch,
		BatchInterval: time.Hour, MaxBytes: 256 << 20,
	})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(3)
	}
	if rec != nil {
		fmt.Printf("recovery %s\n", strings.ReplaceAll(rec.String(), "\n", " "))
	}
	fmt.Printf("open %d\n", b.Stats().NextSeq)
	data := make([]byte, 64)
	for i := range helperLimit {
		c := Routine
		if i%17 == 0 {
			c = Alert
		}
		s, err := b.Append(c, time.Now(), data)
		if err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(3)
		}
		fmt.Printf("seq %d\n", s)
		if i%40 == 39 {
			es, err := b.Peek(20, 0)
			if err != nil {
				fmt.Printf("error %v\n", err)
				os.Exit(3)
			}
			if err := b.Ack(seqs(es)...); err != nil {
				fmt.Printf("error %v\n", err)
				os.Exit(3)
			}
			for _, e := range es {
				fmt.Printf("ack %d\n", e.Seq)
			}
		}
	}
	select {} // wait to be killed
}

type childRun struct {
	open     uint64
	appended []uint64
	acked    map[uint64]bool
	recovery string
}

func runChild(t *testing.T, path string, policy SyncPolicy, batch int, rng *rand.Rand) childRun {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+path, helperSyncEnv+"="+string(policy), helperBatchEnv+"="+strconv.Itoa(batch))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	opening, opened := make(chan struct{}), make(chan struct{})
	readDone := make(chan []string, 1)
	go func() {
		var all []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			all = append(all, sc.Text())
			switch {
			case sc.Text() == "opening":
				close(opening)
			case strings.HasPrefix(sc.Text(), "open "):
				close(opened)
			}
		}
		readDone <- all
	}()
	// Kill at a random moment: one run in five 0-10 ms into Open, the
	// others 0-30 ms into the append loop.
	wait, window := opened, 30_000
	if rng.IntN(5) == 0 {
		wait, window = opening, 10_000
	}
	select {
	case <-wait:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child did not get going within 30s")
	}
	<-time.After(time.Duration(rng.IntN(window)) * time.Microsecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	all := <-readDone
	cmd.Wait()

	r := childRun{acked: map[uint64]bool{}}
	for _, l := range all {
		k, v, _ := strings.Cut(l, " ")
		n, _ := strconv.ParseUint(v, 10, 64)
		switch k {
		case "open":
			r.open = n
		case "seq":
			r.appended = append(r.appended, n)
		case "ack":
			r.acked[n] = true
		case "recovery":
			r.recovery = v
		case "error":
			t.Fatalf("child failed: %s", v)
		}
	}
	return r
}

func crashTest(t *testing.T, policy SyncPolicy, batch int) {
	if testing.Short() {
		t.Skip("spawns 60 processes")
	}
	path := filepath.Join(t.TempDir(), "buf.db")
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill-time seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	const kills = 60
	var runs []childRun
	acked := map[uint64]bool{}
	var lastSeq uint64
	unclean := 0
	start := time.Now()
	for range kills {
		r := runChild(t, path, policy, batch, rng)
		if strings.Contains(r.recovery, "set aside") || strings.Contains(r.recovery, "corrupt") {
			t.Fatalf("a SIGKILL made the file look damaged: %s", r.recovery)
		}
		if strings.Contains(r.recovery, "did not close cleanly") {
			unclean++
		}
		for _, s := range r.appended {
			if s <= lastSeq {
				t.Fatalf("seq %d handed out after %d: reused or out of order", s, lastSeq)
			}
			lastSeq = s
		}
		for s := range r.acked {
			acked[s] = true
		}
		runs = append(runs, r)
	}
	elapsed := time.Since(start)

	b, _ := mustOpen(t, path, Options{Sync: policy, BatchRecords: batch, MaxBytes: 256 << 20})
	present := map[uint64]bool{}
	for _, e := range mustPeek(t, b) {
		present[e.Seq] = true
	}
	total, lostTotal, maxLost := 0, 0, 0
	for i, r := range runs {
		total += len(r.appended)
		lost := 0
		for _, s := range r.appended {
			if present[s] || acked[s] {
				if lost > 0 {
					t.Errorf("run %d: seq %d survived after an earlier seq was lost: losses must be the tail of a run", i, s)
				}
				continue
			}
			lost++
			if policy == SyncAlways {
				t.Errorf("run %d: seq %d was returned by Append (sync=always) but is gone", i, s)
			}
		}
		lostTotal += lost
		maxLost = max(maxLost, lost)
		if policy == SyncBatch && lost > batch-1 {
			t.Errorf("run %d: %d records lost, more than the documented window of %d", i, lost, batch-1)
		}
	}
	t.Logf("sync=%s: %d kills in %v, %d opens after an unclean shutdown, %d appends, %d lost (max %d in one kill)",
		policy, kills, elapsed.Round(time.Millisecond), unclean, total, lostTotal, maxLost)
	if total == 0 {
		t.Errorf("no child appended anything")
	}
}

func TestCrashKillAlways(t *testing.T) { crashTest(t, SyncAlways, 1) }

func TestCrashKillBatch(t *testing.T) { crashTest(t, SyncBatch, 20) }
