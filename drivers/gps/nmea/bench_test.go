package nmea

import (
	"bytes"
	"io"
	"runtime"
	"testing"
)

// benchInput is about 1 MB of u-blox-shaped output with binary frames.
func benchInput(b *testing.B) []byte {
	one := generate(families[0])
	return bytes.Repeat(one, 1<<20/len(one)+1)
}

// BenchmarkDecode reports decode throughput (MB/s of receiver output) and
// allocations per sentence.
func BenchmarkDecode(b *testing.B) {
	in := benchInput(b)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var sentences int64
	for b.Loop() {
		d := NewDecoder(bytes.NewReader(in))
		for {
			if _, err := d.Next(); err == io.EOF {
				break
			}
		}
		sentences += d.Stats().Sentences
	}
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(sentences), "allocs/sentence")
	b.ReportMetric(float64(sentences)/b.Elapsed().Seconds(), "sentences/s")
}

// BenchmarkFramer measures framing alone.
func BenchmarkFramer(b *testing.B) {
	in := benchInput(b)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewFramer(bytes.NewReader(in), 0)
		for {
			if _, err := f.Next(); err != nil {
				break
			}
		}
	}
}
