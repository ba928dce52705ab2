package pki

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkIssueDevice measures issuing one device (key generation and
// signing) for each key type that is quick enough to issue in bulk.
func BenchmarkIssueDevice(b *testing.B) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyECDSAP384} {
		b.Run(string(kt), func(b *testing.B) {
			ca := mustMemoryCA(b, CAOptions{Intermediate: true, Key: kt})
			opts := DeviceOptions{Key: kt}
			for b.Loop() {
				if _, err := ca.IssueDevice("bench-1", opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIssueDevices1000 measures bulk issuing in memory with IssueMany
// on GOMAXPROCS workers; ns/device is the cost per device.
func BenchmarkIssueDevices1000(b *testing.B) {
	ca := mustMemoryCA(b, CAOptions{Intermediate: true})
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("container-%04d", i+1)
	}
	ctx := context.Background()
	for b.Loop() {
		if err := ca.IssueMany(ctx, ids, DeviceOptions{}, 0, func(*Device) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/device")
}

// BenchmarkWriteDevice measures writing one device directory (three files,
// each fsynced, plus directory syncs).
func BenchmarkWriteDevice(b *testing.B) {
	ca := mustMemoryCA(b, CAOptions{Intermediate: true})
	d := mustDevice(b, ca, "bench-1", DeviceOptions{})
	dir := b.TempDir()
	for b.Loop() {
		if _, err := WriteDevice(dir, d, true); err != nil {
			b.Fatal(err)
		}
	}
}
