package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/buildinfo"
	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/telemetry/report"
)

const reportSummary = "cold-chain report of one shipment: HTML or PDF, or the analysis as JSON"

const reportHelp = `Write the cold-chain record of one shipment, as a shipper hands it to the customer:
loading and delivery, temperature and pressure over time against the threshold band,
the route, every excursion (start, end, duration, extreme value), time above and below
the thresholds, and how complete the data is (missing records, the buffer's gap reports,
time without readings, the clock source of the timestamps).

The telemetry comes from an emulator's state directory (the file its emulator.json names,
else DIR/telemetry.jsonl) or from a file of the same format (one "az iot hub monitor-events
--properties all" event per line; - reads standard input).

The records carry no thresholds: the band is 2 to 8 °C and 870 to 1085 hPa unless set with
the flags below. The tracker's own alerts (from its configured thresholds) are shown too.

--format pdf prints the HTML page with headless Chromium (Debian package chromium), which
must be installed; it runs with --no-sandbox so that it works as root. --json prints the
analysis to standard output, alone or next to --out.

Examples:
    trackerctl report --shipment SHP-1 --emulator ./emu --out shp-1.html
    trackerctl report --shipment SHP-1 --telemetry telemetry.jsonl --out shp-1.pdf
    trackerctl report --shipment SHP-1 --telemetry telemetry.jsonl --json --temp-max 25`

// emulatorTelemetry is the part of emulator.json that locates its
// telemetry file.
type emulatorTelemetry struct {
	TelemetryFile string `json:"telemetryFile"`
}

// telemetryPath finds the telemetry file of an emulator state directory.
func telemetryPath(dir string) (string, error) {
	info := filepath.Join(dir, "emulator.json")
	data, err := os.ReadFile(info)
	switch {
	case err == nil:
		var e emulatorTelemetry
		if err := json.Unmarshal(data, &e); err != nil {
			return "", fmt.Errorf("%s is not valid JSON: %w", info, err)
		}
		if e.TelemetryFile != "" {
			if !filepath.IsAbs(e.TelemetryFile) {
				return filepath.Join(dir, e.TelemetryFile), nil
			}
			return e.TelemetryFile, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	p := filepath.Join(dir, "telemetry.jsonl")
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("no telemetry in %s: neither emulator.json nor telemetry.jsonl is there (is it the --state directory of 'trackerctl emulator'?)", dir)
		}
		return "", err
	}
	return p, nil
}

func cmdReport(ctx context.Context, env *cmdline.Env, args []string) error {
	fl := cmdline.FlagSet(env, "trackerctl report",
		"--shipment ID (--emulator DIR | --telemetry FILE) (--out FILE [--format html|pdf] | --json) [flags]", reportHelp)
	shipment := fl.String("shipment", "", "the shipment `ID` to report on (required)")
	emuDir := fl.String("emulator", "", "emulator state `directory` to read the telemetry of")
	telFile := fl.String("telemetry", "", "telemetry `file` in the emulator's telemetry.jsonl format (- for standard input)")
	device := fl.String("device", "", "the tracker `ID`, when several trackers carried the shipment")
	out := fl.String("out", "", "write the report to `file`")
	format := fl.String("format", "", "`html` or pdf (default: pdf when --out ends in .pdf, else html)")
	asJSON := fl.Bool("json", false, "print the analysis as JSON to standard output")
	d := report.DefaultThresholds
	tempMin := fl.Float64("temp-min", d.TempMinC, "lowest acceptable temperature in `°C`")
	tempMax := fl.Float64("temp-max", d.TempMaxC, "highest acceptable temperature in `°C`")
	presMin := fl.Float64("pressure-min", d.PressureMinHPa, "lowest acceptable air pressure in `hPa`")
	presMax := fl.Float64("pressure-max", d.PressureMaxHPa, "highest acceptable air pressure in `hPa`")
	maxHold := fl.Duration("max-hold", 0, "longest `interval` one reading stands for; longer ones are time without data (0: three times the median interval)")
	tz := fl.String("tz", "UTC", "time `zone` of the times in the report (IANA name such as Europe/Berlin, or Local)")
	title := fl.String("title", "", "`title` of the report (default \"Cold-chain report\")")
	generatedAt := fl.String("generated-at", "now", "`time` printed as the report's date: now, an RFC 3339 time, or none")
	chromium := fl.String("chromium", "", "Chromium `binary` for PDF (default: chromium, chromium-browser or google-chrome from PATH)")
	if err := parseFlagsOnly(env, fl, args, "shipment"); err != nil {
		return err
	}
	switch {
	case *emuDir != "" && *telFile != "":
		return cmdline.Usagef("give --emulator DIR or --telemetry FILE, not both")
	case *emuDir == "" && *telFile == "":
		return cmdline.Usagef("--emulator DIR or --telemetry FILE is required: where the shipment's telemetry is")
	case *out == "" && !*asJSON:
		return cmdline.Usagef("nothing to write: give --out FILE for the report, or --json for the analysis")
	}
	f := strings.ToLower(*format)
	if f == "" {
		f = "html"
		if strings.EqualFold(filepath.Ext(*out), ".pdf") {
			f = "pdf"
		}
	}
	if f != "html" && f != "pdf" {
		return cmdline.Usagef("--format %q: use html or pdf", *format)
	}
	if *format != "" && *out == "" {
		return cmdline.Usagef("--format needs --out FILE")
	}
	th := report.Thresholds{TempMinC: *tempMin, TempMaxC: *tempMax, PressureMinHPa: *presMin, PressureMaxHPa: *presMax}
	if err := th.Validate(); err != nil {
		return cmdline.Usagef("%v", strings.TrimPrefix(err.Error(), "report: "))
	}
	if *maxHold < 0 {
		return cmdline.Usagef("--max-hold %v is negative", *maxHold)
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return cmdline.Usagef("--tz %q is not a known time zone (use an IANA name such as Europe/Berlin, UTC or Local)", *tz)
	}
	var generated time.Time
	switch *generatedAt {
	case "now":
		generated = time.Now()
	case "none", "":
	default:
		if generated, err = time.Parse(time.RFC3339, *generatedAt); err != nil {
			return cmdline.Usagef("--generated-at %q: use now, none or an RFC 3339 time such as 2026-03-12T10:00:00Z", *generatedAt)
		}
	}

	// Read and analyse.
	var tel *report.Telemetry
	source := *telFile
	switch {
	case *telFile == "-":
		source = "standard input"
		tel, err = report.Parse(env.Stdin)
	case *telFile != "":
		tel, err = report.ReadFile(*telFile)
	default:
		if source, err = telemetryPath(*emuDir); err != nil {
			return err
		}
		tel, err = report.ReadFile(source)
	}
	if err != nil {
		return err
	}
	rep, err := report.Analyze(tel, report.Options{Shipment: *shipment, Device: *device, Thresholds: th, MaxHold: *maxHold})
	if err != nil {
		return err
	}
	if *asJSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("encode analysis: %w", err)
		}
		if _, err := env.Stdout.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	if *out == "" {
		return nil
	}

	var page bytes.Buffer
	ro := report.RenderOptions{Title: *title, Source: filepath.Base(source), Generator: "trackerctl " + buildinfo.Version, Generated: generated, Location: loc}
	if source == "standard input" {
		ro.Source = source
	}
	if err := rep.WriteHTML(&page, ro); err != nil {
		return err
	}
	if f == "pdf" {
		if err := printPDF(ctx, *chromium, page.Bytes(), *out); err != nil {
			return err
		}
	} else if err := writeFileAtomic(*out, page.Bytes()); err != nil {
		return err
	}
	if !*asJSON {
		fmt.Fprintf(env.Stdout, "%s: shipment %s (tracker %s), %s, %s\n", *out, rep.Shipment, rep.Device,
			countText(len(rep.Excursions), "excursion", "excursions"), coverageText(rep))
	}
	return nil
}

func countText(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func coverageText(r *report.Report) string {
	if r.Duration <= 0 {
		return "no duration"
	}
	pct := 100 * (1 - float64(r.Completeness.Unobserved)/float64(r.Duration))
	return strconv.FormatFloat(pct, 'f', 1, 64) + " % of the time covered by readings"
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so a reader never sees half a report.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// findChromium returns the Chromium binary to print with.
func findChromium(flagValue string) (string, error) {
	if flagValue != "" {
		p, err := exec.LookPath(flagValue)
		if err != nil {
			return "", fmt.Errorf("--chromium %s: %w", flagValue, err)
		}
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("PDF output needs headless Chromium and none was found in PATH: install it (apt-get install -y chromium), name it with --chromium, or write HTML and print that")
}

// pdfTimeout bounds one Chromium run.
const pdfTimeout = 2 * time.Minute

// printPDF renders page to a PDF at out with headless Chromium. Its
// profile and the page live in a temporary directory beside out, removed
// afterwards.
func printPDF(ctx context.Context, chromiumFlag string, page []byte, out string) error {
	bin, err := findChromium(chromiumFlag)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(out), ".report-pdf-*")
	if err != nil {
		return fmt.Errorf("pdf: %w", err)
	}
	defer os.RemoveAll(work)
	htmlPath := filepath.Join(work, "report.html")
	if err := os.WriteFile(htmlPath, page, 0o600); err != nil {
		return fmt.Errorf("pdf: %w", err)
	}
	abs, err := filepath.Abs(htmlPath)
	if err != nil {
		return fmt.Errorf("pdf: %w", err)
	}
	pdfPath := filepath.Join(work, "report.pdf")
	ctx, cancel := context.WithTimeout(ctx, pdfTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(work, "profile"),
		"--no-pdf-header-footer", "--print-to-pdf-no-header",
		"--print-to-pdf="+pdfPath, "file://"+filepath.ToSlash(abs))
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	cmd.Env = append(os.Environ(), "HOME="+work)
	runErr := cmd.Run()
	data, err := os.ReadFile(pdfPath)
	if runErr != nil || err != nil || !bytes.HasPrefix(data, []byte("%PDF-")) {
		if ctx.Err() != nil {
			return fmt.Errorf("pdf: %s did not finish within %v", bin, pdfTimeout)
		}
		return fmt.Errorf("pdf: %s produced no PDF (%v): %s", bin, errors.Join(runErr, err), lastLines(stderr.String(), 5))
	}
	return writeFileAtomic(out, data)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
