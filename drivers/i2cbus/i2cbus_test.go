package i2cbus

import (
	"context"
	"errors"
	"testing"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// fakeBus acknowledges reads at the given addresses only.
type fakeBus struct{ present map[uint16]bool }

func (b *fakeBus) Tx(addr uint16, w, r []byte) error {
	if !b.present[addr] {
		return errors.New("remote I/O error")
	}
	return nil
}
func (b *fakeBus) SetSpeed(physic.Frequency) error { return nil }
func (b *fakeBus) String() string                  { return "fake" }

var _ i2c.Bus = (*fakeBus)(nil)

func TestScan(t *testing.T) {
	bus := &fakeBus{present: map[uint16]bool{0x76: true, 0x3c: true, 0x02: true}}
	got, err := Scan(context.Background(), bus)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 0x3c || got[1] != 0x76 {
		t.Errorf("Scan = %#x, want [0x3c 0x76] (0x02 is reserved)", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Scan(ctx, bus); !errors.Is(err, context.Canceled) {
		t.Errorf("Scan with a cancelled context = %v", err)
	}
}

func TestOpenMissingBus(t *testing.T) {
	_, err := Open("/dev/i2c-does-not-exist")
	if !errors.Is(err, ErrNoBus) {
		t.Errorf("Open of a missing bus = %v, want ErrNoBus", err)
	}
}
