package buffer_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/coldchain/tracker/telemetry/buffer"
)

func Example() {
	dir, err := os.MkdirTemp("", "buffer-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	b, rec, err := buffer.Open(filepath.Join(dir, "buffer.db"), buffer.Options{
		Sync:          buffer.SyncBatch,
		BatchRecords:  20,
		BatchInterval: 5 * time.Second,
		MaxBytes:      16 << 20,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	if rec != nil {
		fmt.Println(rec) // the owner logs what was repaired
	}

	// The sampler appends.
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b.Append(buffer.Routine, at, []byte(`{"env":{"tempC":4.2}}`))
	b.Append(buffer.Alert, at.Add(time.Minute), []byte(`{"env":{"tempC":9.1},"alerts":["temp_high"]}`))
	b.Sync() // or wait for the batch to fill or the interval to pass

	// The publisher sends alerts first, then the backlog, and acknowledges
	// what the hub confirmed.
	urgent, _ := b.PeekUrgent(10, 0)
	backlog, _ := b.Peek(50, 256<<10)
	for _, e := range urgent {
		fmt.Printf("urgent %d %s %s\n", e.Seq, e.Class, e.Data)
	}
	for _, e := range backlog {
		fmt.Printf("backlog %d %s\n", e.Seq, e.Class)
		b.Ack(e.Seq)
	}
	fmt.Println("left:", b.Stats().Depth-b.Stats().PendingAcks)
	// Output:
	// urgent 2 alert {"env":{"tempC":9.1},"alerts":["temp_high"]}
	// backlog 1 routine
	// backlog 2 alert
	// left: 0
}
