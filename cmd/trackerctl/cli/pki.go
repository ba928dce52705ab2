package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/provisioning/pki"
)

const pkiSummary = "fleet PKI: create the CA, verification and device certificates, inspect certificates"

// pkiCommands returns the "trackerctl pki" subcommands.
func pkiCommands() []cmdline.Command {
	return []cmdline.Command{
		{Name: "init-ca", Summary: "create a root CA (and optionally an intermediate) in a directory", Run: cmdPKIInitCA},
		{Name: "verify-cert", Summary: "create the proof-of-possession certificate for a verification code", Run: cmdPKIVerifyCert},
		{Name: "issue", Summary: "issue device certificates, one or in bulk", Run: cmdPKIIssue},
		{Name: "show", Summary: "describe a certificate file and check its chain", Run: cmdPKIShow},
	}
}

func cmdPKI(ctx context.Context, env *cmdline.Env, args []string) error {
	return cmdline.Sub(ctx, env, "trackerctl pki", pkiCommands(), args)
}

// pkiError turns a pki error into the one-line message trackerctl prints:
// without the package prefix, and with what to do for the errors an
// operator meets. errors.Is and errors.As still see the original.
func pkiError(err error, caDir string) error {
	if err == nil {
		return nil
	}
	var ee *pki.ExistsError
	switch {
	case errors.As(err, &ee):
		return &pkiCLIError{msg: ee.Path + " exists; use --force to replace it", err: err}
	case errors.Is(err, pki.ErrNoCA):
		return &pkiCLIError{msg: strings.TrimPrefix(err.Error(), "pki: ") +
			fmt.Sprintf("; create one with 'trackerctl pki init-ca --out %s'", caDir), err: err}
	}
	return &pkiCLIError{msg: strings.TrimPrefix(err.Error(), "pki: "), err: err}
}

// pkiCLIError is an error with a message rewritten for the command line.
type pkiCLIError struct {
	msg string
	err error
}

func (e *pkiCLIError) Error() string { return e.msg }
func (e *pkiCLIError) Unwrap() error { return e.err }

// pkiKeyTypeFlag parses a --key value.
func pkiKeyTypeFlag(s string) (pki.KeyType, error) {
	kt, err := pki.ParseKeyType(s)
	if err != nil {
		return "", cmdline.Usagef("-key: %s", strings.TrimPrefix(err.Error(), "pki: "))
	}
	return kt, nil
}

// pkiParse is parseFlags for the pki commands, which take no positional
// arguments and name every one left over.
func pkiParse(env *cmdline.Env, fs *flag.FlagSet, args []string, required ...string) error {
	if err := parseFlags(env, fs, args, required...); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cmdline.Usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}

func pkiPositiveDays(days int) error {
	if days <= 0 {
		return cmdline.Usagef("-days %d: use a positive number of days", days)
	}
	return nil
}

func cmdPKIInitCA(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl pki init-ca", "--out DIR [--cn NAME] [--key TYPE] [--days N] [--intermediate] [--force]", `
Create a root CA in DIR: root.pem and root.key, and with --intermediate also
intermediate.pem and intermediate.key; the intermediate then signs the
device certificates, so root.key can be moved offline. DIR is made mode
0700 and keys are written mode 0600. Existing CA files are never replaced
without --force.

Upload root.pem (or intermediate.pem) to DPS or IoT Hub, then prove
possession with 'trackerctl pki verify-cert'.`)
	out := fs.String("out", "", "CA `directory` to create")
	cn := fs.String("cn", pki.DefaultCACN, "root subject common `name`")
	key := fs.String("key", string(pki.DefaultKeyType), "key `type`: ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-4096")
	days := fs.Int("days", pki.DefaultCADays, "validity in `days`")
	inter := fs.Bool("intermediate", false, "add an intermediate CA that signs devices")
	force := fs.Bool("force", false, "replace an existing CA in the directory")
	if err := pkiParse(env, fs, args, "out"); err != nil {
		return err
	}
	kt, err := pkiKeyTypeFlag(*key)
	if err != nil {
		return err
	}
	if err := pkiPositiveDays(*days); err != nil {
		return err
	}
	ca, err := pki.InitCA(*out, pki.CAOptions{CN: *cn, Key: kt, Days: *days, Intermediate: *inter, Force: *force})
	if err != nil {
		return pkiError(err, *out)
	}
	w := env.Stdout
	fmt.Fprintf(w, "created CA in %s\n", ca.Dir)
	pkiPrintCALine(w, "root", filepath.Join(ca.Dir, pki.RootCertFile), ca.Root)
	upload := pki.RootCertFile
	if ca.HasIntermediate() {
		pkiPrintCALine(w, "intermediate", filepath.Join(ca.Dir, pki.IntermediateCertFile), ca.Issuer)
		fmt.Fprintf(w, "device certificates will be signed by the intermediate; %s can be kept offline\n", pki.RootKeyFile)
	}
	fmt.Fprintf(w, "next: upload %s to DPS, then run 'trackerctl pki verify-cert --ca %s --code CODE' with the code Azure shows\n",
		filepath.Join(ca.Dir, upload), ca.Dir)
	env.Log().Debug("created CA", "dir", ca.Dir, "intermediate", ca.HasIntermediate())
	return nil
}

func pkiPrintCALine(w io.Writer, what, path string, c *x509.Certificate) {
	s1, _ := pki.Thumbprints(c)
	fmt.Fprintf(w, "  %-12s %s  CN=%s, %s, valid until %s, SHA-1 %s\n",
		what, path, c.Subject.CommonName, pki.KeyTypeOf(c.PublicKey), c.NotAfter.UTC().Format(time.DateOnly), s1)
}

// pkiLoadCA loads the CA in dir for signing and refuses keys that others can
// read.
func pkiLoadCA(dir string) (*pki.CA, error) {
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return nil, pkiError(err, dir)
	}
	for _, name := range []string{pki.RootKeyFile, pki.IntermediateKeyFile} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := pki.CheckKeyPerm(p); err != nil {
			return nil, pkiError(err, dir)
		}
	}
	return ca, nil
}

func cmdPKIVerifyCert(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl pki verify-cert", "--ca DIR --code CODE [--out FILE] [--which root|intermediate] [--force]", `
Create the verification certificate that proves possession of a CA's key:
subject CN = the verification code shown by Azure after the CA certificate
was uploaded, signed by that CA (--which: the root, the default, or the
intermediate). Upload the result to complete the verification. Without
--out the certificate is printed to standard output.`)
	caDir := fs.String("ca", "", "CA `directory`")
	code := fs.String("code", "", "verification `code` from Azure")
	out := fs.String("out", "", "write the certificate to `file` instead of standard output")
	which := fs.String("which", string(pki.LevelRoot), "CA certificate being verified: root or intermediate")
	force := fs.Bool("force", false, "replace an existing --out file")
	if err := pkiParse(env, fs, args, "ca", "code"); err != nil {
		return err
	}
	level := pki.Level(*which)
	if level != pki.LevelRoot && level != pki.LevelIntermediate {
		return cmdline.Usagef("-which %q: use root or intermediate", *which)
	}
	ca, err := pkiLoadCA(*caDir)
	if err != nil {
		return err
	}
	v, err := ca.VerificationCertFor(level, *code, pki.DeviceOptions{})
	if err != nil {
		return pkiError(err, *caDir)
	}
	data := pki.EncodePEM(v.Leaf)
	if *out == "" {
		_, err := env.Stdout.Write(data)
		return err
	}
	if *force {
		err = pki.WriteFileAtomic(*out, data, 0o644)
	} else {
		err = pki.CreateFileAtomic(*out, data, 0o644)
	}
	if err != nil {
		return pkiError(err, *caDir)
	}
	signer := ca.Root
	if level == pki.LevelIntermediate {
		signer = ca.Issuer
	}
	fmt.Fprintf(env.Stdout, "wrote %s: CN=%s signed by the %s (CN=%s), valid until %s; upload it to complete the verification\n",
		*out, *code, level, signer.Subject.CommonName, v.Leaf.NotAfter.UTC().Format(time.DateOnly))
	return nil
}

func cmdPKIIssue(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl pki issue",
		"--ca DIR --out DIR (--id REGISTRATION_ID | --count N [--prefix P] [--start N] [--width N]) [--days N] [--key TYPE] [--force]", `
Issue device certificates signed by the CA in --ca. Each device gets
OUT/<id>/cert.pem, chain.pem (leaf and intermediates, what the device sends)
and key.pem (mode 0600). The subject CN is the DPS registration ID: 1 to 128
letters, digits, '-', '.', '_' or ':', starting and ending with a letter or
digit.

With --count, issues N devices named PREFIX + a zero-padded number, e.g.
container-0001, in parallel. Existing device files are never replaced
without --force.`)
	caDir := fs.String("ca", "", "CA `directory`")
	out := fs.String("out", "", "output `directory` for device directories")
	id := fs.String("id", "", "registration `id` of one device")
	count := fs.Int("count", 0, "issue `N` devices")
	prefix := fs.String("prefix", "container-", "registration id `prefix` for --count")
	start := fs.Int("start", 1, "first `number` for --count")
	width := fs.Int("width", 4, "zero-padded `digits` of the number for --count")
	days := fs.Int("days", pki.DefaultDeviceDays, "validity in `days`")
	key := fs.String("key", string(pki.DefaultKeyType), "key `type`: ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-4096")
	force := fs.Bool("force", false, "replace existing device files")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "parallel `workers` for --count")
	if err := pkiParse(env, fs, args, "ca", "out"); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *id != "" && set["count"]:
		return cmdline.Usagef("use either -id or -count, not both")
	case *id == "" && !set["count"]:
		return cmdline.Usagef("missing -id (one device) or -count (bulk)")
	case set["count"] && *count <= 0:
		return cmdline.Usagef("-count %d: use a positive number of devices", *count)
	case *start < 0:
		return cmdline.Usagef("-start %d: use a number >= 0", *start)
	case *width < 1 || *width > 18:
		return cmdline.Usagef("-width %d: use 1 to 18 digits", *width)
	case *workers < 1:
		return cmdline.Usagef("-workers %d: use at least 1", *workers)
	}
	if *id != "" {
		for _, name := range []string{"prefix", "start", "width", "workers"} {
			if set[name] {
				return cmdline.Usagef("-%s only applies with -count", name)
			}
		}
	}
	kt, err := pkiKeyTypeFlag(*key)
	if err != nil {
		return err
	}
	if err := pkiPositiveDays(*days); err != nil {
		return err
	}
	opts := pki.DeviceOptions{Days: *days, Key: kt}
	if *id != "" {
		if err := pki.ValidateRegistrationID(*id); err != nil {
			return pkiError(err, *caDir)
		}
		ca, err := pkiLoadCA(*caDir)
		if err != nil {
			return err
		}
		return pkiIssueOne(env, ca, *id, *out, opts, *force)
	}
	ids := pkiBulkIDs(*prefix, *start, *count, *width)
	for _, x := range ids {
		if err := pki.ValidateRegistrationID(x); err != nil {
			return pkiError(err, *caDir)
		}
	}
	ca, err := pkiLoadCA(*caDir)
	if err != nil {
		return err
	}
	return pkiIssueBulk(ctx, env, ca, ids, *out, opts, *force, *workers)
}

// pkiBulkIDs returns count registration ids prefix + number, numbers from
// start, zero-padded to width digits.
func pkiBulkIDs(prefix string, start, count, width int) []string {
	ids := make([]string, count)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%0*d", prefix, width, start+i)
	}
	return ids
}

func pkiIssueOne(env *cmdline.Env, ca *pki.CA, id, out string, opts pki.DeviceOptions, force bool) error {
	d, err := ca.IssueDevice(id, opts)
	if err != nil {
		return pkiError(err, ca.Dir)
	}
	devDir, err := pki.WriteDevice(out, d, force)
	if err != nil {
		return pkiError(err, ca.Dir)
	}
	s1, s256 := pki.Thumbprints(d.Leaf)
	w := env.Stdout
	fmt.Fprintf(w, "issued %s in %s (cert.pem, chain.pem, key.pem)\n", id, devDir)
	fmt.Fprintf(w, "  signed by  CN=%s\n", ca.Issuer.Subject.CommonName)
	fmt.Fprintf(w, "  key        %s\n", pki.KeyTypeOf(d.Leaf.PublicKey))
	fmt.Fprintf(w, "  valid      %s to %s\n", d.Leaf.NotBefore.UTC().Format(time.RFC3339), d.Leaf.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  SHA-1      %s\n", s1)
	fmt.Fprintf(w, "  SHA-256    %s\n", s256)
	return nil
}

// pkiCheckBulkTargets refuses, before anything is issued, to replace device
// files, and says how many devices are affected.
func pkiCheckBulkTargets(out string, ids []string) error {
	var first string
	n := 0
	for _, id := range ids {
		for _, f := range []string{pki.DeviceCertFile, pki.DeviceChainFile, pki.DeviceKeyFile} {
			p := filepath.Join(out, id, f)
			if _, err := os.Lstat(p); err == nil {
				if first == "" {
					first = p
				}
				n++
				break
			}
		}
	}
	switch {
	case n == 1:
		return fmt.Errorf("%s exists; use --force to replace it", first)
	case n > 1:
		return fmt.Errorf("%s exists (and files of %d more devices); use --force to replace them", first, n-1)
	}
	return nil
}

func pkiIssueBulk(ctx context.Context, env *cmdline.Env, ca *pki.CA, ids []string, out string, opts pki.DeviceOptions, force bool, workers int) error {
	if !force {
		if err := pkiCheckBulkTargets(out, ids); err != nil {
			return err
		}
	}
	began := time.Now()
	opts.Now = began
	bar := newPKIProgress(env.Stderr, env.Terminal, len(ids))
	var notAfter time.Time
	var once sync.Once
	err := ca.IssueMany(ctx, ids, opts, workers, func(d *pki.Device) error {
		if _, err := pki.WriteDevice(out, d, force); err != nil {
			return err
		}
		once.Do(func() { notAfter = d.Leaf.NotAfter })
		bar.add()
		return nil
	})
	done := bar.finish()
	if err != nil {
		return pkiError(fmt.Errorf("issued %d of %d devices, then: %w", done, len(ids), err), ca.Dir)
	}
	fmt.Fprintf(env.Stdout, "issued %d device certificates (%s ... %s) into %s in %s: %s keys, valid until %s, signed by CN=%s\n",
		len(ids), ids[0], ids[len(ids)-1], out, time.Since(began).Round(time.Millisecond), pki.KeyTypeOf(ca.Issuer.PublicKey),
		notAfter.UTC().Format(time.DateOnly), ca.Issuer.Subject.CommonName)
	return nil
}

// pkiProgress draws a pkiProgress bar on a terminal; it is safe for concurrent
// use.
type pkiProgress struct {
	w     io.Writer
	on    bool
	total int

	mu    sync.Mutex
	done  int
	drawn int // percentage last drawn, -1 for none
}

func newPKIProgress(w io.Writer, terminal bool, total int) *pkiProgress {
	p := &pkiProgress{w: w, on: terminal, total: total, drawn: -1}
	if p.on {
		p.draw()
	}
	return p
}

func (p *pkiProgress) add() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	if p.on && p.done*100/p.total != p.drawn {
		p.draw()
	}
}

// draw writes the bar; p.mu is held or p not shared yet.
func (p *pkiProgress) draw() {
	const width = 30
	pct := p.done * 100 / p.total
	fill := p.done * width / p.total
	fmt.Fprintf(p.w, "\rissuing [%s%s] %3d%% %d/%d", strings.Repeat("#", fill), strings.Repeat(".", width-fill), pct, p.done, p.total)
	p.drawn = pct
}

// finish ends the bar's line and returns how many items were done.
func (p *pkiProgress) finish() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.on {
		fmt.Fprintln(p.w)
	}
	return p.done
}

func cmdPKIShow(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl pki show", "FILE|DIR [--ca DIR]", `
Describe the certificates in FILE (PEM or DER; a device directory means its
chain.pem, a CA directory its root.pem and intermediate.pem): subject,
issuer, serial, validity, key, CA constraints, usages, SANs and the SHA-1
and SHA-256 thumbprints Azure shows. With --ca, also check that the first
certificate chains to that CA; the exit status is 1 if it does not.`)
	caDir := fs.String("ca", "", "check the chain against the CA in `directory`")
	pos, err := pkiParseInterspersed(env, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cmdline.Usagef("want exactly one FILE or DIR, got %d", len(pos))
	}
	path, err := pkiShowPath(pos[0])
	if err != nil {
		return err
	}
	var certs []*x509.Certificate
	for _, p := range path {
		c, err := pki.ReadCertsFile(p)
		if err != nil {
			return pkiError(err, *caDir)
		}
		certs = append(certs, c...)
	}
	now := time.Now()
	w := env.Stdout
	for i, c := range certs {
		if len(certs) > 1 {
			fmt.Fprintf(w, "certificate %d of %d\n", i+1, len(certs))
		}
		pkiDescribeCert(w, c, now)
	}
	if *caDir == "" {
		return nil
	}
	roots, err := pki.ReadCertsFile(filepath.Join(*caDir, pki.RootCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return pkiError(fmt.Errorf("%w in %s: %s not found", pki.ErrNoCA, *caDir, pki.RootCertFile), *caDir)
	}
	if err != nil {
		return pkiError(err, *caDir)
	}
	chain := append([]*x509.Certificate(nil), certs...)
	if inter, err := pki.ReadCertsFile(filepath.Join(*caDir, pki.IntermediateCertFile)); err == nil {
		chain = append(chain, inter...)
	}
	usage := x509.ExtKeyUsageClientAuth
	switch leaf := certs[0]; {
	case leaf.IsCA || len(leaf.ExtKeyUsage) == 0:
		usage = x509.ExtKeyUsageAny
	case pkiHasUsage(leaf, x509.ExtKeyUsageServerAuth) && !pkiHasUsage(leaf, x509.ExtKeyUsageClientAuth):
		usage = x509.ExtKeyUsageServerAuth
	}
	if err := pki.VerifyFor(chain, roots, now, usage); err != nil {
		fmt.Fprintf(w, "chain check against %s: FAILED: %s\n", *caDir, strings.TrimPrefix(err.Error(), "pki: "))
		return &cmdline.ExitError{Code: 1}
	}
	fmt.Fprintf(w, "chain check against %s: ok (%s, usage %s)\n", *caDir, pkiChainNames(certs[0], chain, roots), pki.ExtKeyUsageName(usage))
	return nil
}

// pkiParseInterspersed parses flags that may come before or after positional
// arguments ("show FILE --ca DIR") and returns the positional ones.
func pkiParseInterspersed(env *cmdline.Env, fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := cmdline.Parse(env, fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// pkiShowPath resolves the files "pki show" reads for path.
func pkiShowPath(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("show: %w", err)
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	for _, names := range [][]string{
		{pki.DeviceChainFile}, {pki.DeviceCertFile}, {pki.RootCertFile, pki.IntermediateCertFile},
	} {
		var found []string
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(path, n)); err == nil {
				found = append(found, filepath.Join(path, n))
			}
		}
		if len(found) > 0 {
			return found, nil
		}
	}
	return nil, fmt.Errorf("%s holds neither %s, %s nor %s", path, pki.DeviceChainFile, pki.DeviceCertFile, pki.RootCertFile)
}

func pkiHasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	for _, x := range c.ExtKeyUsage {
		if x == u {
			return true
		}
	}
	return false
}

// pkiChainNames describes the path from leaf to a root, following issuers by
// signature.
func pkiChainNames(leaf *x509.Certificate, chain, roots []*x509.Certificate) string {
	names := []string{"CN=" + leaf.Subject.CommonName}
	cur := leaf
	for range len(chain) + len(roots) {
		var next *x509.Certificate
		for _, c := range append(append([]*x509.Certificate(nil), roots...), chain...) {
			if !c.Equal(cur) && cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		names = append(names, "CN="+next.Subject.CommonName)
		cur = next
	}
	return strings.Join(names, " <- ")
}

// pkiDescribeCert prints the fields an operator checks.
func pkiDescribeCert(w io.Writer, c *x509.Certificate, now time.Time) {
	s1, s256 := pki.Thumbprints(c)
	status := "valid"
	switch {
	case now.Before(c.NotBefore):
		status = fmt.Sprintf("not yet valid (starts in %s)", pkiRoughDuration(c.NotBefore.Sub(now)))
	case now.After(c.NotAfter):
		status = fmt.Sprintf("EXPIRED %s ago", pkiRoughDuration(now.Sub(c.NotAfter)))
	default:
		status = fmt.Sprintf("valid, %s left", pkiRoughDuration(c.NotAfter.Sub(now)))
	}
	ca := "no"
	if c.IsCA {
		ca = "yes"
		switch {
		case c.MaxPathLen > 0 || (c.MaxPathLen == 0 && c.MaxPathLenZero):
			ca += fmt.Sprintf(", path length %d", c.MaxPathLen)
		default:
			ca += ", no path length limit"
		}
	}
	row := func(k, v string) { fmt.Fprintf(w, "  %-14s %s\n", k+":", v) }
	row("Subject", c.Subject.String())
	row("Issuer", c.Issuer.String())
	row("Serial", strings.ToUpper(c.SerialNumber.Text(16)))
	row("Not before", c.NotBefore.UTC().Format(time.RFC3339))
	row("Not after", c.NotAfter.UTC().Format(time.RFC3339))
	row("Status", status)
	row("Key", pki.KeyTypeOf(c.PublicKey))
	row("CA", ca)
	row("Key usage", pkiKeyUsageNames(c.KeyUsage))
	var ekus []string
	for _, u := range c.ExtKeyUsage {
		ekus = append(ekus, pki.ExtKeyUsageName(u))
	}
	if len(ekus) > 0 {
		row("Ext key usage", strings.Join(ekus, ", "))
	}
	var sans []string
	sans = append(sans, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		sans = append(sans, ip.String())
	}
	for _, u := range c.URIs {
		sans = append(sans, u.String())
	}
	if len(sans) > 0 {
		row("SANs", strings.Join(sans, ", "))
	}
	row("SHA-1", s1)
	row("SHA-256", s256)
}

func pkiKeyUsageNames(ku x509.KeyUsage) string {
	names := []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
		"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var out []string
	for i, n := range names {
		if ku&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// pkiRoughDuration prints a duration in days, or hours and minutes under a
// day.
func pkiRoughDuration(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	return d.Round(time.Minute).String()
}
