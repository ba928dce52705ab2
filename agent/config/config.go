// Package config loads and validates trackerd's configuration file.
//
// The file is TOML, strict: a key the program does not know is an error that
// names the key and its line, so a typo never silently falls back to a
// default. Defaults are set in code ([Default]); [Config.Validate] reports
// every problem at once. Relative paths in the file are resolved against the
// directory of the file, so a device bundle directory can be moved as a whole.
//
// Secrets are never in the config: the private key lives in a file referenced
// by [Identity.Key] (or in the state directory once imported).
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ErrNoConfig is returned (wrapped) by [Load] when the file does not exist, so
// callers can tell "missing" from "invalid".
var ErrNoConfig = errors.New("config: no configuration file")

// Config is trackerd's whole configuration.
type Config struct {
	// StateDir holds the identity, the cached DPS assignment and the
	// telemetry buffer. Keys are stored 0600 in a 0700 directory.
	StateDir string `toml:"state_dir"`
	// RuntimeDir holds the local API socket.
	RuntimeDir string `toml:"runtime_dir"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// HardwareModel and the firmware version are sent to DPS as the
	// registration payload.
	HardwareModel string `toml:"hardware_model"`

	Identity  Identity  `toml:"identity"`
	DPS       DPS       `toml:"dps"`
	Hub       Hub       `toml:"hub"`
	Sensor    Sensor    `toml:"sensor"`
	GPS       GPS       `toml:"gps"`
	Telemetry Telemetry `toml:"telemetry"`
	Buffer    Buffer    `toml:"buffer"`
	Clock     Clock     `toml:"clock"`

	// path is the file the config was loaded from ("" for defaults).
	path string
}

// Identity locates the device's X.509 credentials.
type Identity struct {
	// Cert is the PEM chain: the device leaf first, then any
	// intermediates up to (not including) the CA enrolled in DPS.
	Cert string `toml:"cert"`
	// Key is the PEM private key of the leaf (mode 0600).
	Key string `toml:"key"`
	// TrustBundle is a PEM file of CA certificates trusted for the DPS and
	// IoT Hub servers (Azure's roots, and the emulator's CA when testing).
	TrustBundle string `toml:"trust_bundle"`
	// BootImportDir is where a stamped SD card's boot partition carries a
	// device bundle to import on first boot ("" disables the import).
	BootImportDir string `toml:"boot_import_dir"`
}

// DPS configures the Device Provisioning Service.
type DPS struct {
	// Endpoint is host[:port] of the DPS device endpoint; port 8883 when
	// omitted.
	Endpoint string `toml:"endpoint"`
	// IDScope is the DPS instance's ID scope (0ne...).
	IDScope string `toml:"id_scope"`
	// RegistrationID defaults to the certificate's subject CN, which is
	// what DPS requires for X.509 attestation.
	RegistrationID string `toml:"registration_id"`
	// RetryMin and RetryMax bound the exponential backoff (full jitter)
	// between failed registrations.
	RetryMin Duration `toml:"retry_min"`
	RetryMax Duration `toml:"retry_max"`
	// DisabledRetry is the wait after DPS reports the enrollment disabled.
	DisabledRetry Duration `toml:"disabled_retry"`
}

// Hub configures the IoT Hub connection.
type Hub struct {
	// Port is used when the assigned hub name carries none.
	Port int `toml:"port"`
	// KeepAlive is the MQTT keep-alive interval.
	KeepAlive Duration `toml:"keep_alive"`
	// ReconnectMin and ReconnectMax bound the reconnect backoff.
	ReconnectMin Duration `toml:"reconnect_min"`
	ReconnectMax Duration `toml:"reconnect_max"`
	// MaxInFlight bounds unacknowledged QoS 1 publishes.
	MaxInFlight int `toml:"max_in_flight"`
	// MaxMessageBytes caps one device-to-cloud message (IoT Hub allows
	// 256 KiB; batches are kept well below).
	MaxMessageBytes ByteSize `toml:"max_message_bytes"`
	// BatchRecords is the most records sent in one backlog message.
	BatchRecords int `toml:"batch_records"`
	// DrainRate limits backlog messages per second (0: no limit).
	DrainRate float64 `toml:"drain_rate"`
}

// Sensor configures the temperature/pressure sensor.
type Sensor struct {
	// Driver is bmx280 (I2C through periph), iio (the kernel's driver via
	// sysfs), sim (simulated) or none.
	Driver string `toml:"driver"`
	// Bus is the I2C bus number or /dev path (bmx280).
	Bus string `toml:"bus"`
	// Address is the I2C address, 0x76 or 0x77 (bmx280).
	Address int `toml:"address"`
	// IIODevice is the sysfs directory of the IIO device ("" finds the
	// first one with in_temp_input).
	IIODevice string `toml:"iio_device"`
	// Interval is how often the sensor is read.
	Interval Duration `toml:"interval"`
	// Seed and Profile drive the simulated sensor.
	Seed    int64  `toml:"seed"`
	Profile string `toml:"profile"`
}

// GPS configures the position source.
type GPS struct {
	// Driver is serial (NMEA on a UART), replay (an NMEA file in a loop),
	// sim (a synthetic route) or none.
	Driver string `toml:"driver"`
	// Port is the serial device (serial).
	Port string `toml:"port"`
	// Baud is the serial speed (serial).
	Baud int `toml:"baud"`
	// ReplayFile is the NMEA capture to replay (replay).
	ReplayFile string `toml:"replay_file"`
	// ReplaySpeed multiplies the capture's pace (replay).
	ReplaySpeed float64 `toml:"replay_speed"`
	// StaleAfter marks a fix stale when no new epoch arrives within it.
	StaleAfter Duration `toml:"stale_after"`
}

// Telemetry configures what is sent and when.
type Telemetry struct {
	// Interval is the time between telemetry records. The twin's desired
	// telemetryInterval overrides it at run time.
	Interval Duration `toml:"interval"`
	// ShipmentID tags every record; the twin's desired shipmentId
	// overrides it.
	ShipmentID string `toml:"shipment_id"`
	// TempMinC and TempMaxC bound the allowed temperature; a reading
	// outside is an alert, sent at once and never evicted.
	TempMinC float64 `toml:"temp_min_c"`
	TempMaxC float64 `toml:"temp_max_c"`
	// PressureMinHPa and PressureMaxHPa bound the allowed pressure.
	PressureMinHPa float64 `toml:"pressure_min_hpa"`
	PressureMaxHPa float64 `toml:"pressure_max_hpa"`
}

// Buffer configures the durable offline buffer.
type Buffer struct {
	// Sync is "always" (a record is on flash before it is acknowledged to
	// the sampler) or "batch" (every BatchRecords records or
	// BatchInterval, whichever comes first: the most a power cut can lose).
	Sync string `toml:"sync"`
	// BatchRecords and BatchInterval bound a batch commit.
	BatchRecords  int      `toml:"batch_records"`
	BatchInterval Duration `toml:"batch_interval"`
	// MaxBytes caps the buffer's live data; beyond it the oldest routine
	// readings are thinned, then dropped (alerts never are).
	MaxBytes ByteSize `toml:"max_bytes"`
}

// Clock configures how trackerd decides what time it is on boards without
// a real-time clock.
type Clock struct {
	// TrustSystem trusts the system clock once it is later than the
	// persisted last-known-good time and the build time.
	TrustSystem bool `toml:"trust_system"`
	// UseGPS lets GPS time set the trusted time once there is a fix.
	UseGPS bool `toml:"use_gps"`
}

// Default returns the configuration used for every key the file omits.
func Default() Config {
	return Config{
		StateDir:      "/var/lib/trackerd",
		RuntimeDir:    "/run/trackerd",
		LogLevel:      "info",
		HardwareModel: "tracker-board",
		Identity: Identity{
			Cert:        "device.chain.pem",
			Key:         "device.key.pem",
			TrustBundle: "trust.pem",
		},
		DPS: DPS{
			Endpoint:      "global.azure-devices-provisioning.net",
			RetryMin:      Duration(2 * time.Second),
			RetryMax:      Duration(10 * time.Minute),
			DisabledRetry: Duration(1 * time.Hour),
		},
		Hub: Hub{
			Port:            8883,
			KeepAlive:       Duration(60 * time.Second),
			ReconnectMin:    Duration(1 * time.Second),
			ReconnectMax:    Duration(5 * time.Minute),
			MaxInFlight:     8,
			MaxMessageBytes: 64 << 10,
			BatchRecords:    50,
			DrainRate:       10,
		},
		Sensor: Sensor{Driver: "bmx280", Bus: "1", Address: 0x76, Interval: Duration(10 * time.Second), Profile: "reefer"},
		GPS:    GPS{Driver: "serial", Port: "/dev/gps0", Baud: 9600, ReplaySpeed: 1, StaleAfter: Duration(10 * time.Second)},
		Telemetry: Telemetry{
			Interval: Duration(60 * time.Second),
			TempMinC: 2, TempMaxC: 8,
			PressureMinHPa: 870, PressureMaxHPa: 1085,
		},
		Buffer: Buffer{Sync: "batch", BatchRecords: 20, BatchInterval: Duration(5 * time.Second), MaxBytes: 64 << 20},
		Clock:  Clock{TrustSystem: true, UseGPS: true},
	}
}

// Load reads, decodes and validates the file at path. A missing file gives
// an error wrapping [ErrNoConfig]; a malformed one names the line; an
// unknown key names the key and its line; invalid values are all reported
// at once (joined with errors.Join).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist (create one from configs/trackerd.example.toml)", ErrNoConfig, path)
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.path = path
	return c, nil
}

// Parse decodes TOML text. Relative paths are resolved against baseDir.
// The result is validated.
func Parse(data []byte, baseDir string) (*Config, error) {
	c := Default()
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("line %d: %s", pe.Position.Line, pe.Message)
		}
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		var errs []error
		for _, k := range und {
			errs = append(errs, fmt.Errorf("line %d: unknown key %q", keyLine(string(data), k), k.String()))
		}
		return nil, errors.Join(errs...)
	}
	c.resolve(baseDir)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Path returns the file the config was loaded from.
func (c *Config) Path() string { return c.path }

func (c *Config) resolve(base string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && base != "" {
			*p = filepath.Join(base, *p)
		}
	}
	abs(&c.StateDir)
	abs(&c.RuntimeDir)
	abs(&c.Identity.Cert)
	abs(&c.Identity.Key)
	abs(&c.Identity.TrustBundle)
	abs(&c.Identity.BootImportDir)
	abs(&c.GPS.ReplayFile)
	if c.Sensor.IIODevice != "" && !strings.HasPrefix(c.Sensor.IIODevice, "/sys/") {
		abs(&c.Sensor.IIODevice)
	}
}

// Validate reports every invalid value, joined with errors.Join.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.StateDir == "" {
		bad("state_dir", "must be set")
	}
	if c.RuntimeDir == "" {
		bad("runtime_dir", "must be set")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.Identity.Cert == "" {
		bad("identity.cert", "must name the device certificate chain (PEM)")
	}
	if c.Identity.Key == "" {
		bad("identity.key", "must name the device private key (PEM)")
	}
	if c.Identity.TrustBundle == "" {
		bad("identity.trust_bundle", "must name the PEM bundle of server CAs")
	}
	if c.DPS.Endpoint == "" {
		bad("dps.endpoint", "must be set (global.azure-devices-provisioning.net for Azure)")
	} else if err := checkHostPort(c.DPS.Endpoint); err != nil {
		bad("dps.endpoint", "%v", err)
	}
	if c.DPS.IDScope == "" {
		bad("dps.id_scope", "must be set (the ID scope shown on the DPS overview page)")
	}
	if c.DPS.RetryMin <= 0 || c.DPS.RetryMax < c.DPS.RetryMin {
		bad("dps.retry_min/retry_max", "need 0 < retry_min <= retry_max, got %v and %v", c.DPS.RetryMin, c.DPS.RetryMax)
	}
	if c.DPS.DisabledRetry < Duration(time.Minute) {
		bad("dps.disabled_retry", "must be at least 1m, got %v", c.DPS.DisabledRetry)
	}
	if c.Hub.Port < 1 || c.Hub.Port > 65535 {
		bad("hub.port", "%d is not a TCP port", c.Hub.Port)
	}
	if c.Hub.KeepAlive < Duration(5*time.Second) || c.Hub.KeepAlive > Duration(1177*time.Second) {
		bad("hub.keep_alive", "must be between 5s and 1177s (IoT Hub's limit), got %v", c.Hub.KeepAlive)
	}
	if c.Hub.ReconnectMin <= 0 || c.Hub.ReconnectMax < c.Hub.ReconnectMin {
		bad("hub.reconnect_min/reconnect_max", "need 0 < reconnect_min <= reconnect_max, got %v and %v", c.Hub.ReconnectMin, c.Hub.ReconnectMax)
	}
	if c.Hub.MaxInFlight < 1 || c.Hub.MaxInFlight > 1000 {
		bad("hub.max_in_flight", "must be between 1 and 1000, got %d", c.Hub.MaxInFlight)
	}
	if c.Hub.MaxMessageBytes < 1<<10 || c.Hub.MaxMessageBytes > 256<<10 {
		bad("hub.max_message_bytes", "must be between 1KiB and 256KiB (IoT Hub's message limit), got %v", c.Hub.MaxMessageBytes)
	}
	if c.Hub.BatchRecords < 1 || c.Hub.BatchRecords > 1000 {
		bad("hub.batch_records", "must be between 1 and 1000, got %d", c.Hub.BatchRecords)
	}
	if c.Hub.DrainRate < 0 {
		bad("hub.drain_rate", "must not be negative")
	}
	switch c.Sensor.Driver {
	case "bmx280":
		if c.Sensor.Address != 0x76 && c.Sensor.Address != 0x77 {
			bad("sensor.address", "a BMP280/BME280 answers at 0x76 or 0x77, got %#x", c.Sensor.Address)
		}
	case "iio", "sim", "none":
	default:
		bad("sensor.driver", "%q is not one of bmx280, iio, sim, none", c.Sensor.Driver)
	}
	if c.Sensor.Interval < Duration(100*time.Millisecond) {
		bad("sensor.interval", "must be at least 100ms, got %v", c.Sensor.Interval)
	}
	switch c.GPS.Driver {
	case "serial":
		if c.GPS.Port == "" {
			bad("gps.port", "must name the serial device")
		}
		if c.GPS.Baud <= 0 {
			bad("gps.baud", "must be positive, got %d", c.GPS.Baud)
		}
	case "replay":
		if c.GPS.ReplayFile == "" {
			bad("gps.replay_file", "must name an NMEA capture when gps.driver is replay")
		}
	case "sim", "none":
	default:
		bad("gps.driver", "%q is not one of serial, replay, sim, none", c.GPS.Driver)
	}
	if c.GPS.ReplaySpeed <= 0 {
		bad("gps.replay_speed", "must be positive, got %v", c.GPS.ReplaySpeed)
	}
	if c.GPS.StaleAfter < Duration(time.Second) {
		bad("gps.stale_after", "must be at least 1s, got %v", c.GPS.StaleAfter)
	}
	if c.Telemetry.Interval < Duration(100*time.Millisecond) {
		bad("telemetry.interval", "must be at least 100ms, got %v", c.Telemetry.Interval)
	}
	if c.Telemetry.TempMinC >= c.Telemetry.TempMaxC {
		bad("telemetry.temp_min_c/temp_max_c", "need temp_min_c < temp_max_c, got %v and %v", c.Telemetry.TempMinC, c.Telemetry.TempMaxC)
	}
	if c.Telemetry.PressureMinHPa >= c.Telemetry.PressureMaxHPa {
		bad("telemetry.pressure_min_hpa/pressure_max_hpa", "need pressure_min_hpa < pressure_max_hpa, got %v and %v", c.Telemetry.PressureMinHPa, c.Telemetry.PressureMaxHPa)
	}
	if len(c.Telemetry.ShipmentID) > 128 {
		bad("telemetry.shipment_id", "is longer than 128 characters")
	}
	switch c.Buffer.Sync {
	case "always", "batch":
	default:
		bad("buffer.sync", "%q is not one of always, batch", c.Buffer.Sync)
	}
	if c.Buffer.BatchRecords < 1 {
		bad("buffer.batch_records", "must be at least 1, got %d", c.Buffer.BatchRecords)
	}
	if c.Buffer.BatchInterval <= 0 {
		bad("buffer.batch_interval", "must be positive, got %v", c.Buffer.BatchInterval)
	}
	if c.Buffer.MaxBytes < 64<<10 {
		bad("buffer.max_bytes", "must be at least 64KiB, got %v", c.Buffer.MaxBytes)
	}
	return errors.Join(errs...)
}

func checkHostPort(s string) error {
	host, port := s, ""
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.Contains(s[i:], "]") {
		host, port = s[:i], s[i+1:]
	}
	if host == "" || strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("%q is not host[:port]", s)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has an invalid port", s)
		}
	}
	return nil
}

// keyLine finds the line of key k in TOML source src, or 0. It understands
// [table] headers and "key =" lines, which is what trackerd's files use.
func keyLine(src string, k toml.Key) int {
	table := ""
	for i, line := range strings.Split(src, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "[") {
			table = strings.Trim(l, "[] ")
			if j := strings.IndexByte(table, '#'); j >= 0 {
				table = strings.TrimSpace(table[:j])
			}
			if table == k.String() {
				return i + 1
			}
			continue
		}
		eq := strings.IndexByte(l, '=')
		if eq <= 0 {
			continue
		}
		name := strings.Trim(strings.TrimSpace(l[:eq]), `"`)
		full := name
		if table != "" {
			full = table + "." + name
		}
		if full == k.String() || strings.HasPrefix(k.String(), full+".") {
			return i + 1
		}
	}
	return 0
}
