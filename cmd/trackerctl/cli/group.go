package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

// groupCommands are the subcommands of "trackerctl group".
func groupCommands() []cmdline.Command {
	return []cmdline.Command{
		{Name: "create", Summary: "create a DPS X.509 enrollment group for a fleet CA", Run: cmdGroupCreate},
		{Name: "show", Summary: "show an enrollment group", Run: cmdGroupShow},
		{Name: "list", Summary: "list enrollment groups", Run: cmdGroupList},
		{Name: "delete", Summary: "delete an enrollment group (devices stay registered)", Run: cmdGroupDelete},
		{Name: "deprovision", Summary: "remove a group, its registration records and hub devices", Run: cmdGroupDeprovision},
	}
}

func cmdGroup(ctx context.Context, env *cmdline.Env, args []string) error {
	return cmdline.Sub(ctx, env, "trackerctl group", groupCommands(), args)
}

const svcFlagsHelp = `Connection: --dps-connection-string / --hub-connection-string, else the
` + envDPSConnectionString + ` / ` + envHubConnectionString + ` environment variables, or
--emulator DIR for the local emulator (reads DIR/` + svcEmulatorFile + `).`

func cmdGroupCreate(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl group create", "--id GROUP --ca DIR|--ca-cert FILE [--hub HOST] [--initial-twin FILE]",
		"Create an X.509 enrollment group: every device whose certificate chains to the\n"+
			"CA's issuing certificate (the intermediate if there is one, else the root)\n"+
			"provisions through it to the hub.\n\n"+svcFlagsHelp)
	id := fs.String("id", "", "enrollment group `ID`")
	caDir := fs.String("ca", "", "CA `directory` from 'trackerctl pki init-ca'")
	caCert := fs.String("ca-cert", "", "signing certificate `file` (PEM; the first certificate is used)")
	hub := fs.String("hub", "", "IoT hub `host` devices are assigned to (default: the emulator's or the hub connection string's hub; none lets DPS choose among its linked hubs)")
	twinFile := fs.String("initial-twin", "", "JSON `file` with the devices' initial twin: {\"tags\":{…},\"properties\":{\"desired\":{…}}}")
	disabled := fs.Bool("disabled", false, "create the group disabled")
	replace := fs.Bool("replace", false, "replace the group if it exists")
	sf := addServiceFlags(fs, true, false)
	if err := parseFlags(env, fs, args, "id"); err != nil {
		return err
	}
	if err := pki.ValidateRegistrationID(*id); err != nil {
		return cmdline.Usagef("--id: %v", strings.TrimPrefix(err.Error(), "pki: "))
	}
	if (*caDir == "") == (*caCert == "") {
		return cmdline.Usagef("give exactly one of --ca DIR or --ca-cert FILE")
	}
	signer, err := svcLoadSigner(*caDir, *caCert)
	if err != nil {
		return err
	}
	var twin *service.InitialTwin
	if *twinFile != "" {
		if twin, err = svcReadInitialTwin(*twinFile); err != nil {
			return err
		}
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, false)
	if err != nil {
		return err
	}
	defer cancel()
	g := &service.EnrollmentGroup{
		EnrollmentGroupID:  *id,
		Attestation:        service.X509GroupAttestation(signer),
		IoTHubHostName:     *hub,
		InitialTwin:        twin,
		ProvisioningStatus: service.StatusEnabled,
		ReprovisionPolicy:  &service.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true},
	}
	if g.IoTHubHostName == "" {
		g.IoTHubHostName = s.hubHost
	}
	if *disabled {
		g.ProvisioningStatus = service.StatusDisabled
	}
	old, err := s.dps.GetGroup(ctx, *id)
	switch {
	case err == nil && !*replace:
		return fmt.Errorf("enrollment group %s exists; use --replace to replace it, or 'trackerctl group show --id %s'", *id, *id)
	case err == nil:
		g.ETag = old.ETag
	case !service.IsNotFound(err):
		return s.dpsErr(err)
	}
	got, err := s.dps.PutGroup(ctx, g)
	if service.IsPreconditionFailed(err) {
		return fmt.Errorf("enrollment group %s changed while it was being replaced; run the command again: %w", *id, err)
	}
	if err != nil {
		return s.dpsErr(err)
	}
	sha1, _ := pki.Thumbprints(signer)
	verb := "created"
	if old != nil {
		verb = "replaced"
	}
	hubText := got.IoTHubHostName
	if hubText == "" {
		hubText = "any linked hub"
	}
	fmt.Fprintf(env.Stdout, "enrollment group %s %s (%s): signer %q (SHA-1 %s), hub %s\n",
		got.EnrollmentGroupID, verb, got.ProvisioningStatus, signer.Subject.CommonName, sha1, hubText)
	return nil
}

// svcLoadSigner returns the group's signing certificate: the CA's issuer, or
// the first certificate of a file.
func svcLoadSigner(caDir, caCert string) (*x509.Certificate, error) {
	if caDir != "" {
		ca, err := pki.LoadCA(caDir)
		if err != nil {
			return nil, err
		}
		return ca.Issuer, nil
	}
	certs, err := pki.ReadCertsFile(caCert)
	if err != nil {
		return nil, err
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("%s: %q is not a CA certificate; give the CA that issues the devices", caCert, certs[0].Subject.CommonName)
	}
	return certs[0], nil
}

// svcReadInitialTwin reads and checks an initial twin file.
func svcReadInitialTwin(path string) (*service.InitialTwin, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("initial twin: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var t service.InitialTwin
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("initial twin %s: %v; expected {\"tags\":{…},\"properties\":{\"desired\":{…}}}", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("initial twin %s: more than one JSON value", path)
	}
	return &t, nil
}

func cmdGroupShow(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl group show", "--id GROUP [--json]",
		"Show an enrollment group and how many devices registered through it.\n\n"+svcFlagsHelp)
	id := fs.String("id", "", "enrollment group `ID`")
	asJSON := fs.Bool("json", false, "print JSON")
	sf := addServiceFlags(fs, true, false)
	if err := parseFlags(env, fs, args, "id"); err != nil {
		return err
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, false)
	if err != nil {
		return err
	}
	defer cancel()
	g, err := s.dps.GetGroup(ctx, *id)
	if service.IsNotFound(err) {
		return errNoGroup(*id)
	}
	if err != nil {
		return s.dpsErr(err)
	}
	regs, err := s.dps.ListRegistrations(ctx, *id)
	if err != nil {
		return s.dpsErr(err)
	}
	if *asJSON {
		if regs == nil {
			regs = []service.RegistrationState{}
		}
		return writeJSON(env.Stdout, struct {
			*service.EnrollmentGroup
			Registrations []service.RegistrationState `json:"registrations"`
		}{g, regs})
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "group\t%s\n", g.EnrollmentGroupID)
	fmt.Fprintf(w, "status\t%s\n", g.ProvisioningStatus)
	fmt.Fprintf(w, "attestation\t%s\n", svcAttestation(g.Attestation))
	fmt.Fprintf(w, "hub\t%s\n", svcOr(g.IoTHubHostName, strings.Join(g.IoTHubs, ", ")))
	if g.InitialTwin != nil {
		b, _ := json.Marshal(g.InitialTwin)
		fmt.Fprintf(w, "initial twin\t%s\n", b)
	}
	fmt.Fprintf(w, "created\t%s\n", svcTime(g.CreatedAt))
	fmt.Fprintf(w, "updated\t%s\n", svcTime(g.LastUpdated))
	fmt.Fprintf(w, "etag\t%s\n", svcOr(g.ETag))
	counts := map[string]int{}
	for _, r := range regs {
		counts[r.Status]++
	}
	var parts []string
	for _, st := range []string{service.RegistrationAssigned, service.RegistrationAssigning, service.RegistrationFailed, service.RegistrationDisabled, service.RegistrationUnassigned} {
		if counts[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
		}
	}
	fmt.Fprintf(w, "registrations\t%d %s\n", len(regs), svcParen(strings.Join(parts, ", ")))
	return w.Flush()
}

func cmdGroupList(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl group list", "[--json]", "List the enrollment groups.\n\n"+svcFlagsHelp)
	asJSON := fs.Bool("json", false, "print JSON")
	sf := addServiceFlags(fs, true, false)
	if err := parseFlagsOnly(env, fs, args); err != nil {
		return err
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, false)
	if err != nil {
		return err
	}
	defer cancel()
	groups, err := s.dps.ListGroups(ctx)
	if err != nil {
		return s.dpsErr(err)
	}
	if *asJSON {
		if groups == nil {
			groups = []service.EnrollmentGroup{}
		}
		return writeJSON(env.Stdout, groups)
	}
	if len(groups) == 0 {
		fmt.Fprintln(env.Stdout, "no enrollment groups")
		return nil
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "GROUP\tSTATUS\tHUB\tSIGNER\tUPDATED")
	for _, g := range groups {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", g.EnrollmentGroupID, g.ProvisioningStatus,
			svcOr(g.IoTHubHostName, strings.Join(g.IoTHubs, ",")), svcAttestation(g.Attestation), svcTime(g.LastUpdated))
	}
	return w.Flush()
}

func cmdGroupDelete(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl group delete", "--id GROUP [--etag ETAG]",
		"Delete an enrollment group. Devices that provisioned through it keep their\n"+
			"registration records and hub identities (and can keep connecting): use\n"+
			"'trackerctl group deprovision' to remove them too.\n\n"+svcFlagsHelp)
	id := fs.String("id", "", "enrollment group `ID`")
	etag := fs.String("etag", "", "delete only if the group's ETag is still `ETAG`")
	sf := addServiceFlags(fs, true, false)
	if err := parseFlags(env, fs, args, "id"); err != nil {
		return err
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, false)
	if err != nil {
		return err
	}
	defer cancel()
	err = s.dps.DeleteGroup(ctx, *id, *etag)
	switch {
	case service.IsNotFound(err):
		return errNoGroup(*id)
	case service.IsPreconditionFailed(err):
		return fmt.Errorf("enrollment group %s changed (its ETag is no longer %s); show it again and retry: %w", *id, *etag, err)
	case err != nil:
		return s.dpsErr(err)
	}
	fmt.Fprintf(env.Stdout, "enrollment group %s deleted; its devices stay registered\n", *id)
	return nil
}

func cmdGroupDeprovision(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl group deprovision", "--id GROUP [--parallel N] [--json]",
		"Deprovision a whole group: disable it, delete the hub identity and the DPS\n"+
			"registration record of every device that provisioned through it, then delete\n"+
			"the group. Safe to run again after a partial failure.\n\n"+svcFlagsHelp)
	id := fs.String("id", "", "enrollment group `ID`")
	parallel := fs.Int("parallel", 8, "devices removed at once")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	sf := addServiceFlags(fs, true, true)
	if err := parseFlags(env, fs, args, "id"); err != nil {
		return err
	}
	if *parallel < 1 || *parallel > 64 {
		return cmdline.Usagef("--parallel %d: use 1 to 64", *parallel)
	}
	s, err := sf.connect(env, true, true)
	if err != nil {
		return err
	}
	fleet := &service.Fleet{DPS: s.dps, Hub: s.hub}
	prog := newSvcProgress(env, "deprovision "+*id)
	rep, err := fleet.DeprovisionGroup(ctx, *id, service.GroupDeprovisionOptions{
		Parallel: *parallel,
		Progress: func(p service.GroupProgress) {
			prog.update(p.Done, p.Total, p.RegistrationID)
			if p.Err != nil {
				prog.printf("%s: %v", p.RegistrationID, p.Err)
			}
		},
	})
	prog.finish()
	if *asJSON && rep != nil {
		if jerr := writeJSON(env.Stdout, rep); jerr != nil {
			return jerr
		}
	} else if rep != nil {
		printGroupReport(env.Stdout, rep)
	}
	if err != nil {
		return s.dpsErr(err)
	}
	return nil
}

func printGroupReport(w io.Writer, rep *service.GroupReport) {
	fmt.Fprintf(w, "group %s: %d registration records found, %d deleted; hub devices: %d deleted, %d already gone",
		rep.GroupID, rep.Registrations, rep.RegistrationsDeleted, rep.DevicesDeleted, rep.DevicesAbsent)
	if len(rep.OtherHub) > 0 {
		fmt.Fprintf(w, ", %d on another hub left alone (%s)", len(rep.OtherHub), strings.Join(rep.OtherHub, ", "))
	}
	fmt.Fprintln(w)
	switch rep.Group {
	case service.OutcomeDeleted:
		fmt.Fprintf(w, "enrollment group %s deleted\n", rep.GroupID)
	case service.OutcomeAbsent:
		fmt.Fprintf(w, "enrollment group %s was already deleted\n", rep.GroupID)
	default:
		fmt.Fprintf(w, "enrollment group %s left disabled: %d devices failed\n", rep.GroupID, len(rep.Failed))
		for _, f := range rep.Failed {
			fmt.Fprintf(w, "  %s: %s\n", f.RegistrationID, f.Error)
		}
	}
}

// svcProgress draws a one-line progress indicator on a terminal's stderr and
// stays silent otherwise.
type svcProgress struct {
	env   *cmdline.Env
	label string
	drawn bool
	last  time.Time
}

func newSvcProgress(env *cmdline.Env, label string) *svcProgress {
	return &svcProgress{env: env, label: label}
}

// update redraws the line (at most ten times a second, and always at the
// end).
func (p *svcProgress) update(done, total int, item string) {
	if !p.env.Terminal {
		return
	}
	now := time.Now()
	if done != total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	line := fmt.Sprintf("%s: %d/%d %s", p.label, done, total, item)
	if len(line) > 79 {
		line = line[:79]
	}
	fmt.Fprintf(p.env.Stderr, "\r\033[K%s", line)
	p.drawn = true
}

// printf prints a message on its own line, on any stderr.
func (p *svcProgress) printf(format string, a ...any) {
	if p.drawn {
		fmt.Fprint(p.env.Stderr, "\r\033[K")
		p.drawn = false
	}
	fmt.Fprintf(p.env.Stderr, format+"\n", a...)
}

func (p *svcProgress) finish() {
	if p.drawn {
		fmt.Fprintln(p.env.Stderr)
		p.drawn = false
	}
}

func svcAttestation(a service.Attestation) string {
	if a.X509 == nil {
		return a.Type
	}
	pick := func(cs *service.X509Certificates) string {
		if cs == nil || cs.Primary == nil {
			return ""
		}
		if cs.Primary.Info != nil && cs.Primary.Info.SubjectName != "" {
			return cs.Primary.Info.SubjectName
		}
		if certs, err := pki.ParseCertsPEM([]byte(cs.Primary.Certificate)); err == nil {
			return "CN=" + certs[0].Subject.CommonName
		}
		return "x509"
	}
	if s := pick(a.X509.SigningCertificates); s != "" {
		return "x509 signer " + s
	}
	if s := pick(a.X509.ClientCertificates); s != "" {
		return "x509 client " + s
	}
	if a.X509.CAReferences != nil {
		return "x509 CA " + a.X509.CAReferences.Primary
	}
	return "x509"
}

func svcTime(t time.Time) string {
	if t.IsZero() || t.Year() <= 1 {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// svcOr returns the first non-empty value, or "-".
func svcOr(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return "-"
}

func svcParen(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}
