package buffer

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writeBytes returns this process's write_bytes from /proc/self/io: the
// bytes it caused to be sent to the storage layer (page-cache pages it
// dirtied), the honest figure for flash wear. ok is false where there is
// no /proc.
func writeBytes() (n int64, ok bool) {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, found := strings.CutPrefix(sc.Text(), "write_bytes: "); found {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

const benchRecord = 300 // bytes: a reading with environment and fix as JSON

// measure runs append b.N times (split over writers goroutines) and
// reports appends/s and bytes written per record.
func measure(b *testing.B, writers int, setup func(dir string) (appendOne func() error, finish func() error)) {
	dir := b.TempDir()
	appendOne, finish := setup(dir)
	w0, ok := writeBytes()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N / writers
	for w := range writers {
		n := per
		if w == 0 {
			n += b.N % writers
		}
		wg.Go(func() {
			for range n {
				if err := appendOne(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := finish(); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	if w1, ok2 := writeBytes(); ok && ok2 {
		b.ReportMetric(float64(w1-w0)/float64(b.N), "B/record")
	}
}

func benchBuffer(o Options) func(dir string) (func() error, func() error) {
	return func(dir string) (func() error, func() error) {
		o.MaxBytes = 1 << 30
		buf, _, err := Open(filepath.Join(dir, "buf.db"), o)
		if err != nil {
			panic(err)
		}
		data := make([]byte, benchRecord)
		now := time.Now()
		return func() error {
				_, err := buf.Append(Routine, now, data)
				return err
			}, func() error {
				return buf.Close()
			}
	}
}

// naiveBolt is the baseline: bbolt with default options, one transaction
// (one commit) per record.
func naiveBolt(dir string) (func() error, func() error) {
	db, err := bolt.Open(filepath.Join(dir, "naive.db"), 0o600, nil)
	if err != nil {
		panic(err)
	}
	data := make([]byte, benchRecord)
	var mu sync.Mutex
	var seq uint64
	return func() error {
			mu.Lock()
			seq++
			k := seqKey(seq)
			mu.Unlock()
			return db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists(recordsBucket)
				if err != nil {
					return err
				}
				return bk.Put(k, data)
			})
		}, func() error {
			return db.Close()
		}
}

// BenchmarkAppend compares, side by side, the buffer's two sync policies
// and a naive one-commit-per-record bbolt queue: appends per second and
// bytes written to storage per 300-byte record.
func BenchmarkAppend(b *testing.B) {
	b.Run("always", func(b *testing.B) { measure(b, 1, benchBuffer(Options{Sync: SyncAlways})) })
	b.Run("always-8writers", func(b *testing.B) { measure(b, 8, benchBuffer(Options{Sync: SyncAlways})) })
	b.Run("batch", func(b *testing.B) {
		measure(b, 1, benchBuffer(Options{Sync: SyncBatch, BatchRecords: DefaultBatchRecords, BatchInterval: DefaultBatchInterval}))
	})
	b.Run("naive-bbolt", func(b *testing.B) { measure(b, 1, naiveBolt) })
}
