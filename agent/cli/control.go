package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coldchain/tracker/agent"
	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/agent/localapi"
)

// runtimeDirFlags adds --config and --runtime-dir and returns a function
// resolving the socket directory: the flag, else the config's runtime_dir,
// else the default.
func runtimeDirFlags(fs *flag.FlagSet) func() string {
	cfgPath := fs.String("config", DefaultConfigPath, "configuration `file` (for runtime_dir)")
	dir := fs.String("runtime-dir", "", "`directory` of the trackerd socket (default: runtime_dir from the config, else /run/trackerd)")
	return func() string {
		if *dir != "" {
			return *dir
		}
		if c, err := config.Load(*cfgPath); err == nil {
			return c.RuntimeDir
		}
		return config.Default().RuntimeDir
	}
}

func cmdStatus(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd status", "[--json] [--config FILE] [--runtime-dir DIR]",
		"Show the running daemon's identity, provisioning and connection state, clock,\n"+
			"sensor and GPS health, buffer and recent warnings (80 columns, for a serial console).")
	asJSON := fs.Bool("json", false, "print the raw status as JSON")
	asLine := fs.Bool("line", false, "print one line: device, state, hub, temperature, position, buffer depth (for fleet tables)")
	dir := runtimeDirFlags(fs)
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := localapi.NewClient(dir()).Do(ctx, "GET", "/v1/status", &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := env.Stdout.Write(raw)
		return err
	}
	var st agent.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("decode status: %w", err)
	}
	if *asLine {
		fmt.Fprintln(env.Stdout, StatusLine(&st))
		return nil
	}
	RenderStatus(env.Stdout, &st)
	return nil
}

// StatusLineHeader labels the columns of [StatusLine].
const StatusLineHeader = "DEVICE           STATE          HUB              TEMP °C  POSITION             UNSENT"

// StatusLine renders st on one line under [StatusLineHeader].
func StatusLine(st *agent.Status) string {
	state := st.Provisioning.State
	if state == "assigned" {
		state = st.Connection.State
	}
	temp := "-"
	if st.Sensor.TempC != nil {
		temp = fmt.Sprintf("%.2f", *st.Sensor.TempC)
	}
	pos := "no fix"
	if st.GPS.Lat != nil && st.GPS.Lon != nil {
		pos = fmt.Sprintf("%.4f,%.4f", *st.GPS.Lat, *st.GPS.Lon)
	}
	id := orDash(st.Identity.DeviceID, st.Identity.RegistrationID)
	return fmt.Sprintf("%-16.16s %-14.14s %-16.16s %7s  %-20.20s %6d", id, state, orDash(st.Identity.Hub, "-"), temp, pos, st.Buffer.Depth)
}

// RenderStatus prints st for an 80-column console.
func RenderStatus(w io.Writer, st *agent.Status) {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := st.Now.Sub(t).Round(time.Second)
		if d < 0 {
			return t.UTC().Format("2006-01-02 15:04:05Z")
		}
		return d.String() + " ago"
	}
	line := func(k, format string, a ...any) {
		fmt.Fprintln(w, fitColumns(fmt.Sprintf("%-13s %s", k, fmt.Sprintf(format, a...))))
	}
	id := st.Identity
	fmt.Fprintf(w, "trackerd %s, up %s, clock %s\n", st.Version, st.Now.Sub(st.Started).Round(time.Second), st.Clock.Source)
	line("device", "%s  hub %s", orDash(id.DeviceID, id.RegistrationID), orDash(id.Hub, "-"))
	expiry := id.CertNotAfter.UTC().Format("2006-01-02")
	if !id.CertNotAfter.IsZero() && st.Now.After(id.CertNotAfter) {
		expiry += " EXPIRED"
	} else if !id.CertNotAfter.IsZero() && id.CertNotAfter.Sub(st.Now) < 30*24*time.Hour {
		expiry += " (expires soon)"
	}
	line("certificate", "%s, expires %s", id.CertSubject, expiry)
	p := st.Provisioning
	prov := p.State
	if !p.NextAttempt.IsZero() && p.State != "assigned" {
		prov += fmt.Sprintf(", next try in %s", p.NextAttempt.Sub(st.Now).Round(time.Second))
	}
	line("provisioning", "%s (%d attempts)", prov, p.Attempts)
	if p.LastError != "" {
		line("", "last error: %s", p.LastError)
	}
	c := st.Connection
	line("connection", "%s since %s, %d reconnects", c.State, ago(c.Since), c.Reconnects)
	if c.LastError != "" {
		line("", "last error: %s", c.LastError)
	}
	s := st.Sensor
	if s.TempC != nil && s.PressureHPa != nil {
		line("sensor", "%s %s: %.2f °C %.1f hPa (%s)", s.Driver, health(s.Healthy), *s.TempC, *s.PressureHPa, ago(s.At))
	} else {
		line("sensor", "%s %s: no reading", s.Driver, health(s.Healthy))
	}
	if s.LastError != "" {
		line("", "%d errors, last: %s", s.Errors, s.LastError)
	}
	g := st.GPS
	if g.Lat != nil && g.Lon != nil {
		line("gps", "%s %s: mode %d, %.5f,%.5f, %d sats (%s)", g.Driver, health(g.Healthy), g.Mode, *g.Lat, *g.Lon, g.Sats, ago(g.FixTime))
	} else {
		line("gps", "%s %s: no fix", g.Driver, health(g.Healthy))
	}
	if g.LastError != "" {
		line("", "last error: %s", g.LastError)
	}
	b := st.Buffer
	if b.Depth == 0 {
		// Sent records may wait for the next batch commit to leave the
		// file; their bytes and times are not "unsent".
		line("buffer", "nothing unsent, %d evicted, sync=%s", b.Evicted, b.Sync)
	} else {
		line("buffer", "%d unsent (%s), oldest %s, %d evicted, sync=%s", b.Depth, bytesString(b.Bytes), ago(b.OldestUnsent), b.Evicted, b.Sync)
	}
	t := st.Telemetry
	line("shipment", "%s", orDash(t.ShipmentID, "none (between shipments)"))
	line("telemetry", "every %s, sent %d records in %d messages, last %s", t.Interval, t.Sent, t.Messages, ago(t.LastSent))
	if len(st.Warnings) == 0 {
		line("warnings", "none")
		return
	}
	fmt.Fprintln(w, "warnings:")
	for _, wr := range st.Warnings {
		fmt.Fprintln(w, fitColumns(fmt.Sprintf("  %s %s", wr.Time.UTC().Format("01-02 15:04:05"), wr.Msg)))
	}
}

// statusColumns is the width of a serial console.
const statusColumns = 80

// fitColumns cuts s to statusColumns characters, ending a cut line with
// "…". It counts runes, not bytes ("°C"), and never splits one.
func fitColumns(s string) string {
	if utf8.RuneCountInString(s) <= statusColumns {
		return s
	}
	n := 0
	for i := range s {
		if n == statusColumns-1 {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

func health(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAULT"
}

func orDash(s, alt string) string {
	if strings.TrimSpace(s) == "" {
		return alt
	}
	return s
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func cmdReprovision(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd reprovision", "[--config FILE] [--runtime-dir DIR]",
		"Clear the cached IoT Hub assignment and register with DPS again.")
	dir := runtimeDirFlags(fs)
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := localapi.NewClient(dir()).Do(ctx, "POST", "/v1/reprovision", nil); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, "reprovisioning: the cached assignment is cleared; watch 'trackerd status'")
	return nil
}

func cmdFlush(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd flush", "[--timeout 2m] [--config FILE] [--runtime-dir DIR]",
		"Send every buffered record to IoT Hub now; wait until the buffer is empty or the timeout passes.")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the buffer to drain")
	dir := runtimeDirFlags(fs)
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout+10*time.Second)
	defer cancel()
	var res struct {
		Unsent  int  `json:"unsent"`
		Drained bool `json:"drained"`
	}
	if err := localapi.NewClient(dir()).Do(ctx, "POST", "/v1/flush?timeout="+timeout.String(), &res); err != nil {
		return err
	}
	if !res.Drained {
		return &cmdline.ExitError{Code: 1, Err: fmt.Errorf("%d records still unsent after %v (is the hub reachable? see 'trackerd status')", res.Unsent, *timeout)}
	}
	fmt.Fprintln(env.Stdout, "flushed: the buffer is empty")
	return nil
}

func cmdLogLevel(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd log-level", "[--config FILE] [--runtime-dir DIR] LEVEL",
		"Change the running daemon's log level: debug, info, warn or error. Not persisted.")
	dir := runtimeDirFlags(fs)
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cmdline.Usagef("want exactly one level: debug, info, warn or error")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := localapi.NewClient(dir()).Do(ctx, "POST", "/v1/log-level?level="+fs.Arg(0), nil); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "log level set to %s\n", fs.Arg(0))
	return nil
}
