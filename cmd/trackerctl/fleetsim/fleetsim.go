// Package fleetsim runs a fleet of simulated trackers in one process: real
// agents (the same code as trackerd, with simulated sensor and GPS, a state
// directory each) provisioning through DPS with X.509 attestation and
// streaming to IoT Hub. It shows that an enrollment group provisions large
// numbers of devices securely, and measures how long that takes.
//
// [Run] owns every goroutine it starts and returns after all have stopped.
package fleetsim

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coldchain/tracker/agent"
	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/provisioning/identity"
	"github.com/coldchain/tracker/provisioning/pki"
)

// Options configures a simulation.
type Options struct {
	// Devices is the number of trackers; Prefix and the index make their
	// registration IDs (prefix-00001).
	Devices int
	Prefix  string
	// CA issues the device certificates; it must be the enrollment
	// group's CA.
	CA *pki.CA
	// DPSEndpoint, IDScope and Roots say where DPS is and whom to trust.
	DPSEndpoint string
	IDScope     string
	Roots       *x509.CertPool
	// WorkDir holds a state directory per device.
	WorkDir string
	// Stagger spreads the starts over this long, with jitter.
	Stagger time.Duration
	// Interval is the telemetry interval; SensorInterval the sensor's.
	Interval, SensorInterval time.Duration
	// Stream is how long to keep streaming after every device provisioned
	// (or Timeout passed).
	Stream time.Duration
	// Timeout bounds the wait for all devices to provision.
	Timeout time.Duration
	// Seed makes the start jitter reproducible.
	Seed int64
	// Progress is called about twice a second.
	Progress func(Progress)
	// Logger receives the agents' warnings; nil discards them.
	Logger *slog.Logger
}

// Progress is a snapshot during the run.
type Progress struct {
	Devices, Started, Provisioned, Streaming, Failing int
	Elapsed                                           time.Duration
}

// Percentiles summarises latencies.
type Percentiles struct {
	P50 time.Duration `json:"p50"`
	P95 time.Duration `json:"p95"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

// Report is the outcome of a simulation.
type Report struct {
	Devices     int `json:"devices"`
	Provisioned int `json:"provisioned"`
	Streaming   int `json:"streaming"`
	Failed      int `json:"failed"`
	// TimeToAll is from the first start until every device provisioned
	// and sent its first telemetry (or the timeout).
	TimeToAll time.Duration `json:"timeToAll"`
	// Registration is the time from a device's start until DPS assigned
	// it; FirstTelemetry until its first message was acknowledged.
	Registration   Percentiles `json:"registration"`
	FirstTelemetry Percentiles `json:"firstTelemetry"`
	// Records and Messages delivered (acknowledged by the hub).
	Records  uint64 `json:"records"`
	Messages uint64 `json:"messages"`
	// HeapPerDevice and RSSPerDevice estimate the memory one simulated
	// tracker costs in this process.
	HeapPerDevice int64 `json:"heapPerDeviceBytes"`
	RSSPerDevice  int64 `json:"rssPerDeviceBytes"`
	// Errors counts the last provisioning error of failed devices.
	Errors map[string]int `json:"errors,omitempty"`
}

type device struct {
	id          string
	agent       *agent.Agent
	start       time.Time
	started     bool
	assigned    time.Duration
	firstSent   time.Duration
	lastErr     string
	done        chan error
	finalRecord uint64
	finalMsgs   uint64
}

// Run simulates the fleet until every device streams and Stream has
// passed, or ctx ends.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Devices <= 0 {
		return nil, errors.New("fleetsim: need at least one device")
	}
	if o.CA == nil || o.DPSEndpoint == "" || o.IDScope == "" {
		return nil, errors.New("fleetsim: CA, DPS endpoint and ID scope are required")
	}
	if o.Prefix == "" {
		o.Prefix = "sim-"
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.SensorInterval <= 0 {
		o.SensorInterval = o.Interval
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	width := max(5, len(strconv.Itoa(o.Devices)))
	ids := make([]string, o.Devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%0*d", o.Prefix, width, i+1)
	}
	devs := make([]*device, o.Devices)
	idx := make(map[string]int, len(ids))
	for i, id := range ids {
		idx[id] = i
		devs[i] = &device{id: id, done: make(chan error, 1)}
	}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rssBefore := rss()

	// Certificates, in memory, on all cores.
	var mu sync.Mutex
	idents := make([]*identity.Identity, o.Devices)
	err := o.CA.IssueMany(ctx, ids, pki.DeviceOptions{}, 0, func(d *pki.Device) error {
		id, err := identity.New(d.Chain, d.Key)
		if err != nil {
			return err
		}
		mu.Lock()
		idents[idx[d.ID]] = id
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fleetsim: issue certificates: %w", err)
	}
	for i, d := range devs {
		cfg := config.Default()
		cfg.StateDir = filepath.Join(o.WorkDir, d.id)
		cfg.RuntimeDir = filepath.Join(o.WorkDir, d.id, "run")
		cfg.DPS.Endpoint, cfg.DPS.IDScope = o.DPSEndpoint, o.IDScope
		cfg.DPS.RetryMin = config.Duration(time.Second)
		cfg.DPS.RetryMax = config.Duration(30 * time.Second)
		cfg.Hub.ReconnectMin = config.Duration(time.Second)
		cfg.Hub.ReconnectMax = config.Duration(30 * time.Second)
		cfg.Sensor.Driver, cfg.GPS.Driver = "sim", "sim"
		cfg.Sensor.Interval = config.Duration(o.SensorInterval)
		cfg.Telemetry.Interval = config.Duration(o.Interval)
		cfg.Telemetry.ShipmentID = "SIM"
		cfg.Buffer.Sync = "batch"
		cfg.Buffer.MaxBytes = 1 << 20
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("fleetsim: device config: %w", err)
		}
		a, err := agent.New(&cfg, agent.Deps{Identity: idents[i], Roots: o.Roots, NoLocalAPI: true, Logger: log.With("device_id", d.id)})
		if err != nil {
			return nil, fmt.Errorf("fleetsim: %s: %w", d.id, err)
		}
		d.agent = a
	}

	h := fnv.New64a()
	h.Write([]byte(o.Prefix))
	rng := rand.New(rand.NewPCG(uint64(o.Seed), h.Sum64()))
	offsets := make([]time.Duration, o.Devices)
	for i := range offsets {
		base := time.Duration(float64(o.Stagger) * float64(i) / float64(o.Devices))
		jitter := time.Duration(0)
		if o.Stagger > 0 {
			jitter = time.Duration(rng.Int64N(int64(o.Stagger)/int64(o.Devices) + 1))
		}
		offsets[i] = base + jitter
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	t0 := time.Now()
	var startMu sync.Mutex
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-runCtx.Done():
				d.done <- nil
				return
			case <-time.After(offsets[i]):
			}
			startMu.Lock()
			d.start, d.started = time.Now(), true
			startMu.Unlock()
			d.done <- d.agent.Run(runCtx)
		}()
	}

	// Watch until everyone streams (or the timeout), then stream on.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	var allAt time.Duration
	var peakHeap uint64
	var peakRSS int64
	var streamEnd <-chan time.Time
	report := &Report{Devices: o.Devices, Errors: map[string]int{}}
watch:
	for {
		select {
		case <-ctx.Done():
			break watch
		case <-deadline.C:
			if streamEnd == nil {
				allAt = time.Since(t0)
				streamEnd = time.After(o.Stream)
			}
		case <-streamEnd:
			break watch
		case <-tick.C:
		}
		p := Progress{Devices: o.Devices, Elapsed: time.Since(t0)}
		for _, d := range devs {
			startMu.Lock()
			started, start := d.started, d.start
			startMu.Unlock()
			if !started {
				continue
			}
			p.Started++
			st := d.agent.Snapshot()
			if d.assigned == 0 && st.Identity.Hub != "" && st.Provisioning.State == "assigned" {
				d.assigned = time.Since(start)
			}
			if d.firstSent == 0 && st.Telemetry.Sent > 0 {
				d.firstSent = time.Since(start)
			}
			if d.assigned > 0 {
				p.Provisioned++
			}
			if d.firstSent > 0 {
				p.Streaming++
			}
			if st.Provisioning.LastError != "" && d.assigned == 0 {
				p.Failing++
				d.lastErr = st.Provisioning.LastError
			}
		}
		if p.Streaming == o.Devices && streamEnd == nil {
			allAt = time.Since(t0)
			streamEnd = time.After(o.Stream)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peakHeap, peakRSS = ms.HeapAlloc, rss()
		}
		if o.Progress != nil {
			o.Progress(p)
		}
	}
	if peakHeap == 0 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peakHeap, peakRSS = ms.HeapAlloc, rss()
	}
	for _, d := range devs {
		st := d.agent.Snapshot()
		d.finalRecord, d.finalMsgs = st.Telemetry.Sent, st.Telemetry.Messages
	}
	stop()
	wg.Wait()
	var runErrs []error
	for _, d := range devs {
		if err := <-d.done; err != nil {
			runErrs = append(runErrs, fmt.Errorf("%s: %w", d.id, err))
		}
	}

	var reg, first []time.Duration
	for _, d := range devs {
		report.Records += d.finalRecord
		report.Messages += d.finalMsgs
		if d.assigned > 0 {
			report.Provisioned++
			reg = append(reg, d.assigned)
		} else {
			report.Failed++
			msg := d.lastErr
			if msg == "" {
				msg = "not provisioned before the timeout"
			}
			report.Errors[shorten(msg)]++
		}
		if d.firstSent > 0 {
			report.Streaming++
			first = append(first, d.firstSent)
		}
	}
	report.TimeToAll = allAt
	report.Registration = percentiles(reg)
	report.FirstTelemetry = percentiles(first)
	report.HeapPerDevice = int64(peakHeap-min(peakHeap, before.HeapAlloc)) / int64(o.Devices)
	if rssBefore > 0 && peakRSS > rssBefore {
		report.RSSPerDevice = (peakRSS - rssBefore) / int64(o.Devices)
	}
	return report, errors.Join(runErrs...)
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(ds))+0.5) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return Percentiles{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: ds[len(ds)-1]}
}

func shorten(s string) string {
	if len(s) > 120 {
		return s[:117] + "..."
	}
	return s
}

// rss returns the process's resident set size in bytes (0 if unknown).
func rss() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
