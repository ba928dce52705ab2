package buffer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func FuzzDecodeEntry(f *testing.F) {
	good := encodeEntry(Entry{Seq: 42, Class: Alert, Time: t0, Data: []byte(`{"kind":"reading"}`)})
	f.Add(seqKey(42), good)
	f.Add(seqKey(42), good[:recordHeaderLen-1])
	f.Add(seqKey(43), good)
	f.Add([]byte{1, 2, 3}, good)
	f.Add(seqKey(7), encodeEntry(Entry{Seq: 7, Class: Routine}))
	f.Fuzz(func(t *testing.T, key, v []byte) {
		e, err := decodeEntry(key, v)
		if err != nil {
			return
		}
		if !bytes.Equal(seqKey(e.Seq), key) {
			t.Fatalf("decodeEntry accepted key %x as seq %d", key, e.Seq)
		}
		if !e.Class.Valid() {
			t.Fatalf("decodeEntry accepted class %d", e.Class)
		}
		if re := encodeEntry(e); !bytes.Equal(re, v) {
			t.Fatalf("decode then encode changed the record:\n in %x\nout %x", v, re)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	f.Add(state{Clean: true, Reserved: 100, Last: 99, Thin: [maxThin]thinLevel{{Upto: 5, Drop: true}}}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeState(b)
		if err != nil {
			return
		}
		if re := s.encode(); !bytes.Equal(re, b) {
			t.Fatalf("decode then encode changed the state:\n in %x\nout %x", b, re)
		}
	})
}

// FuzzOpen feeds arbitrary file contents to Open: it must never fail,
// panic or crash, and what it returns must be usable.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.db")
	b, _, err := Open(path, Options{})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 30 {
		c := Routine
		if i%5 == 0 {
			c = Alert
		}
		if _, err := b.Append(c, t0, bytes.Repeat([]byte{'x'}, 100+i*7)); err != nil {
			f.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte("not a database"))
	f.Fuzz(func(t *testing.T, file []byte) {
		p := filepath.Join(t.TempDir(), "buf.db")
		if err := os.WriteFile(p, file, 0o600); err != nil {
			t.Fatal(err)
		}
		b, _, err := Open(p, Options{LockTimeout: time.Second})
		if err != nil {
			t.Fatalf("Open = %v", err)
		}
		defer b.Close()
		if _, err := b.Peek(1000, 0); err != nil {
			t.Fatalf("Peek = %v", err)
		}
		if _, err := b.Append(Routine, t0, []byte("x")); err != nil {
			t.Fatalf("Append = %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
	})
}
