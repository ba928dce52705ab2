package bmx280

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"

	"github.com/coldchain/tracker/drivers/env"
)

// datasheetCal is the calibration of the Bosch BMP280 datasheet's worked
// example (§8.2 / §3.11.3), as the 26 bytes at 0x88..0xA1, little-endian:
// T1=27504 T2=26435 T3=-1000 P1=36477 P2=-10685 P3=3024 P4=2855 P5=140 P6=-7
// P7=15500 P8=-14600 P9=6000, then the unused byte and H1.
var datasheetCal = []byte{
	0x70, 0x6b, 0x43, 0x67, 0x18, 0xfc, // T1 T2 T3
	0x7d, 0x8e, 0x43, 0xd6, 0xd0, 0x0b, // P1 P2 P3
	0x27, 0x0b, 0x8c, 0x00, 0xf9, 0xff, // P4 P5 P6
	0x8c, 0x3c, 0xf8, 0xc6, 0x70, 0x17, // P7 P8 P9
	0x00, 0x00,
}

// bmp280Init is the transcript of probing and initialising a BMP280 at 0x76
// with DefaultOpts.
func bmp280Init() []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x58}},              // our probe: chip id
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x58}},              // bmxx80: chip id
		{Addr: 0x76, W: []byte{0x88}, R: datasheetCal},              // calibration
		{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf5, 0xa0, 0xf4, 0x6c}}, // sleep, standby 1 s, no filter
	}
}

// sense is the transcript of one forced measurement returning raw.
func sense(raw ...byte) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xf4, 0x6d}},            // forced mode, 4x/4x
		{Addr: 0x76, W: []byte{0xf3}, R: []byte{0x00}}, // status: idle
		{Addr: 0x76, W: []byte{0xf7}, R: raw},          // press_msb.. temp_xlsb (.. hum)
	}
}

// TestDatasheetExample replays the datasheet's worked example: raw
// adc_T=519888, adc_P=415148 give 25.08 °C and 100653.25 Pa with the
// integer compensation (the datasheet's floating-point version prints
// 100653.27 Pa).
func TestDatasheetExample(t *testing.T) {
	// adc_P = 415148 = 0x655AC, adc_T = 519888 = 0x7EED0, each shifted left 4.
	bus := &i2ctest.Playback{Ops: append(bmp280Init(), sense(0x65, 0x5a, 0xc0, 0x7e, 0xed, 0x00)...), DontPanic: true}
	s, err := NewI2C(bus, 0x76, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Model() != "BMP280" {
		t.Errorf("Model = %q, want BMP280", s.Model())
	}
	r, err := s.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.TemperatureC-25.08) > 0.005 {
		t.Errorf("TemperatureC = %v, want 25.08", r.TemperatureC)
	}
	if math.Abs(r.PressureHPa-1006.5325) > 0.0001 {
		t.Errorf("PressureHPa = %v, want 1006.5325 (100653.25 Pa)", r.PressureHPa)
	}
	if r.HumidityPct != nil {
		t.Errorf("BMP280 reported humidity %v", *r.HumidityPct)
	}
	if err := r.Check(env.BoschLimits); err != nil {
		t.Errorf("datasheet reading judged implausible: %v", err)
	}
	if err := bus.Close(); err != nil {
		t.Errorf("transcript not fully used: %v", err)
	}
}

func TestBME280Humidity(t *testing.T) {
	// Humidity calibration of a real BME280: H1=75, H2=362, H3=0, H4=313,
	// H5=50, H6=30.
	cal := append([]byte(nil), datasheetCal...)
	cal[25] = 75
	ops := []i2ctest.IO{
		{Addr: 0x77, W: []byte{0xd0}, R: []byte{0x60}},
		{Addr: 0x77, W: []byte{0xd0}, R: []byte{0x60}},
		{Addr: 0x77, W: []byte{0x88}, R: cal},
		{Addr: 0x77, W: []byte{0xe1}, R: []byte{0x6a, 0x01, 0x00, 0x13, 0x29, 0x03, 0x1e}},
		{Addr: 0x77, W: []byte{0xf4, 0x6c, 0xf2, 0x03, 0xf5, 0xa0, 0xf4, 0x6c}},
		{Addr: 0x77, W: []byte{0xf4, 0x6d}},
		{Addr: 0x77, W: []byte{0xf3}, R: []byte{0x00}},
		{Addr: 0x77, W: []byte{0xf7}, R: []byte{0x65, 0x5a, 0xc0, 0x7e, 0xed, 0x00, 0x6d, 0x00}},
	}
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	s, err := NewI2C(bus, 0x77, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Model() != "BME280" || r.HumidityPct == nil || *r.HumidityPct <= 0 || *r.HumidityPct >= 100 {
		t.Errorf("model %s humidity %v, want a BME280 humidity in (0, 100)", s.Model(), r.HumidityPct)
	}
	if err := bus.Close(); err != nil {
		t.Errorf("transcript not fully used: %v", err)
	}
}

// nackBus is an empty bus: every transaction fails like an unanswered
// address does on Linux.
type nackBus struct{ closed bool }

func (b *nackBus) Tx(uint16, []byte, []byte) error { return errors.New("sysfs-i2c: remote I/O error") }
func (b *nackBus) SetSpeed(physic.Frequency) error { return nil }
func (b *nackBus) String() string                  { return "I2C1" }
func (b *nackBus) Close() error                    { b.closed = true; return nil }

var _ i2c.BusCloser = (*nackBus)(nil)

func TestProbeFailures(t *testing.T) {
	tests := []struct {
		name string
		bus  i2c.Bus
		addr uint16
		want error
	}{
		{"missing chip", &nackBus{}, 0x76, env.ErrNotFound},
		{"wrong chip id", &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x50}}}, DontPanic: true}, 0x76, ErrUnknownChip},
		{"engineering sample", &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: 0x77, W: []byte{0xd0}, R: []byte{0x57}}}, DontPanic: true}, 0x77, ErrUnknownChip},
		{"short calibration read", &i2ctest.Playback{Ops: []i2ctest.IO{
			{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x58}},
			{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x58}},
			{Addr: 0x76, W: []byte{0x88}, R: datasheetCal[:10]},
		}, DontPanic: true}, 0x76, nil},
		{"bad address", &nackBus{}, 0x40, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewI2C(tt.bus, tt.addr, nil)
			if err == nil {
				t.Fatalf("NewI2C = %v, want an error", s)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("NewI2C error = %v, want %v", err, tt.want)
			}
			if tt.want == nil && (errors.Is(err, env.ErrNotFound) || errors.Is(err, ErrUnknownChip)) {
				t.Errorf("NewI2C error = %v, should be neither not-found nor unknown chip", err)
			}
		})
	}
}

func TestShortMeasurementRead(t *testing.T) {
	ops := append(bmp280Init(), sense(0x65, 0x5a, 0xc0)...) // 3 of 6 bytes
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	s, err := NewI2C(bus, 0x76, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(context.Background()); err == nil {
		t.Fatal("Read with a short data read succeeded")
	}
}

// at moves a transcript to another address.
func at(addr uint16, ops []i2ctest.IO) []i2ctest.IO {
	out := make([]i2ctest.IO, len(ops))
	for i, op := range ops {
		op.Addr = addr
		out[i] = op
	}
	return out
}

// TestOpenWithProber runs the real open path through env.Prober: at first
// the bus has no chip at all; on the next probe 0x76 holds another device
// and the BMP280 answers at 0x77.
func TestOpenWithProber(t *testing.T) {
	empty := &nackBus{}
	ops := []i2ctest.IO{{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x00}}}
	ops = append(ops, at(0x77, append(bmp280Init(), sense(0x65, 0x5a, 0xc0, 0x7e, 0xed, 0x00)...))...)
	buses := []i2c.BusCloser{empty, &i2ctest.Playback{Ops: ops, DontPanic: true}}
	var opened []string
	open := func(name string) (i2c.BusCloser, error) {
		opened = append(opened, name)
		b := buses[0]
		buses = buses[1:]
		return b, nil
	}
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	p := env.NewProber(Open(open, "1", 0, nil), &env.ProberOpts{
		MinBackoff: time.Second, MaxBackoff: time.Second, Now: func() time.Time { return now }})
	if _, err := p.Read(context.Background()); !errors.Is(err, env.ErrNotFound) {
		t.Fatalf("first Read = %v, want ErrNotFound", err)
	}
	if !empty.closed {
		t.Error("bus without a chip was not closed")
	}
	now = now.Add(time.Second)
	r, err := p.Read(context.Background())
	if err != nil {
		t.Fatalf("second Read: %v", err)
	}
	if math.Abs(r.TemperatureC-25.08) > 0.005 {
		t.Errorf("TemperatureC = %v, want 25.08", r.TemperatureC)
	}
	if len(opened) != 2 || opened[0] != "1" || opened[1] != "1" {
		t.Errorf("opened buses %q, want bus 1 twice", opened)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
