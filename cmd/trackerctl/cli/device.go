package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

// deviceCommands are the subcommands of "trackerctl device"; adding one is
// one line here.
func deviceCommands() []cmdline.Command {
	return []cmdline.Command{
		{Name: "bundle", Summary: "write the directory a board needs: certificate, key, trust bundle, config", Run: cmdDeviceBundle},
		{Name: "list", Summary: "list devices: registration state, hub status, last activity", Run: cmdDeviceList},
		{Name: "shipment", Summary: "start a shipment on a loaded tracker (twin desired shipmentId)", Run: cmdDeviceShipment},
		{Name: "show", Summary: "show one device's enrollment, registration, hub identity and twin", Run: cmdDeviceShow},
		{Name: "disenroll", Summary: "block a device from provisioning (disabled individual enrollment)", Run: cmdDeviceDisenroll},
		{Name: "reenroll", Summary: "remove a device's individual enrollment so its group admits it again", Run: cmdDeviceReenroll},
		{Name: "deregister", Summary: "delete (or disable) a device's hub identity and registration record", Run: cmdDeviceDeregister},
		{Name: "deprovision", Summary: "at delivery: drain and seal, then disenroll and deregister a device", Run: cmdDeviceDeprovision},
	}
}

func cmdDevice(ctx context.Context, env *cmdline.Env, args []string) error {
	return cmdline.Sub(ctx, env, "trackerctl device", deviceCommands(), args)
}

// certFlags are --cert and --devices, which locate a device's certificate.
type certFlags struct{ cert, devices string }

func addCertFlags(fs *flag.FlagSet) *certFlags {
	cf := &certFlags{}
	fs.StringVar(&cf.cert, "cert", "", "the device's certificate `file` (PEM; the first certificate is its leaf)")
	fs.StringVar(&cf.devices, "devices", "", "`directory` of device directories from 'trackerctl pki issue' (DIR/ID/"+pki.DeviceCertFile+")")
	return cf
}

// leaf loads the device certificate of id and checks that it is id's.
func (cf *certFlags) leaf(id string) (*x509.Certificate, error) {
	path := cf.cert
	switch {
	case cf.cert != "" && cf.devices != "":
		return nil, cmdline.Usagef("give --cert FILE or --devices DIR, not both")
	case cf.devices != "":
		path = filepath.Join(cf.devices, id, pki.DeviceCertFile)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no certificate for %s in %s (expected %s, as 'trackerctl pki issue --out %s' writes it)", id, cf.devices, path, cf.devices)
		}
	case cf.cert == "":
		return nil, cmdline.Usagef("--cert FILE or --devices DIR is required: the disabled individual enrollment that blocks %s needs its certificate", id)
	}
	certs, err := pki.ReadCertsFile(path)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if leaf.IsCA {
		return nil, fmt.Errorf("%s holds CA %q, not the certificate of device %s", path, leaf.Subject.CommonName, id)
	}
	if !strings.EqualFold(leaf.Subject.CommonName, id) {
		return nil, fmt.Errorf("%s is the certificate of %q, not of device %s", path, leaf.Subject.CommonName, id)
	}
	return leaf, nil
}

func cmdDeviceDisenroll(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl device disenroll", "--id ID --cert FILE|--devices DIR",
		"Block one device from provisioning, even though its enrollment group would\n"+
			"admit it: create a disabled individual enrollment with its certificate (the\n"+
			"way DPS documents it). Its hub identity keeps working until 'device\n"+
			"deregister'. 'device reenroll' admits it again.\n\n"+svcFlagsHelp)
	fs.String("id", "", "device registration `ID`")
	cf := addCertFlags(fs)
	sf := addServiceFlags(fs, true, false)
	id, err := parseID(env, fs, args)
	if err != nil {
		return err
	}
	leaf, err := cf.leaf(id)
	if err != nil {
		return err
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, false)
	if err != nil {
		return err
	}
	defer cancel()
	fleet := &service.Fleet{DPS: s.dps}
	if _, err := fleet.Disenroll(ctx, leaf); err != nil {
		return s.dpsErr(err)
	}
	fmt.Fprintf(env.Stdout, "device %s disenrolled: a disabled individual enrollment blocks it from provisioning\n"+
		"its hub identity works until 'trackerctl device deregister --id %s'\n", id, id)
	return nil
}

func cmdDeviceReenroll(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl device reenroll", "--id ID",
		"Delete a device's individual enrollment (the disabled one 'device disenroll'\n"+
			"made), so that it provisions through its enrollment group again.\n\n"+svcFlagsHelp)
	fs.String("id", "", "device registration `ID`")
	sf := addServiceFlags(fs, true, false)
	id, err := parseID(env, fs, args)
	if err != nil {
		return err
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, false)
	if err != nil {
		return err
	}
	defer cancel()
	fleet := &service.Fleet{DPS: s.dps}
	found, err := fleet.Reenroll(ctx, id)
	if err != nil {
		return s.dpsErr(err)
	}
	if !found {
		return fmt.Errorf("device %s has no individual enrollment: it was not disenrolled (see 'trackerctl device show --id %s')", id, id)
	}
	fmt.Fprintf(env.Stdout, "device %s re-enrolled: its individual enrollment is deleted, its group admits it again\n", id)
	return nil
}

func cmdDeviceDeregister(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl device deregister", "--id ID [--disable]",
		"Delete a device's IoT Hub identity (or disable it with --disable, keeping its\n"+
			"twin) and its DPS registration record. The device can no longer connect; it\n"+
			"can provision again unless it is also disenrolled.\n\n"+svcFlagsHelp)
	fs.String("id", "", "device registration `ID`")
	disable := fs.Bool("disable", false, "disable the hub identity instead of deleting it")
	sf := addServiceFlags(fs, true, true)
	id, err := parseID(env, fs, args)
	if err != nil {
		return err
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, true)
	if err != nil {
		return err
	}
	defer cancel()
	fleet := &service.Fleet{DPS: s.dps, Hub: s.hub}
	rep, err := fleet.Deregister(ctx, id, *disable)
	if err != nil {
		return svcExplainEither(s, err)
	}
	if rep.HubDevice == service.OutcomeAbsent && rep.Registration == service.OutcomeAbsent {
		return fmt.Errorf("device %s not found: no hub identity and no registration record", id)
	}
	fmt.Fprintf(env.Stdout, "device %s deregistered: hub identity %s, registration record %s\n", id, outcomeText(rep.HubDevice), outcomeText(rep.Registration))
	return nil
}

func cmdDeviceDeprovision(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl device deprovision", "--id ID --cert FILE|--devices DIR [--drain-timeout 2m]",
		"The delivery step for one tracker: ask it (direct method, or a cloud-to-device\n"+
			"message when it is offline) to flush its buffer and seal the shipment, wait\n"+
			"for the drain, then disenroll and deregister it. Reports what was left unsent.\n\n"+svcFlagsHelp)
	fs.String("id", "", "device registration `ID`")
	cf := addCertFlags(fs)
	drain := fs.Duration("drain-timeout", 2*time.Minute, "how long the device may spend flushing before it seals anyway")
	offlineWait := fs.Duration("offline-wait", 2*time.Minute, "how long to wait for an offline device to connect and answer (0: don't wait)")
	disable := fs.Bool("disable", false, "disable the hub identity instead of deleting it")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	sf := addServiceFlags(fs, true, true)
	id, err := parseID(env, fs, args)
	if err != nil {
		return err
	}
	if *drain < time.Second || *drain > 4*time.Minute {
		return cmdline.Usagef("--drain-timeout %v: use 1s to 4m (a direct method waits at most 5 minutes)", *drain)
	}
	if *offlineWait < 0 {
		return cmdline.Usagef("--offline-wait %v: use 0 or more", *offlineWait)
	}
	leaf, err := cf.leaf(id)
	if err != nil {
		return err
	}
	s, err := sf.connect(env, true, true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *drain+*offlineWait+5*time.Minute)
	defer cancel()
	fleet := &service.Fleet{DPS: s.dps, Hub: s.hub}
	prog := newSvcProgress(env, "deprovision "+id)
	rep, err := fleet.DeprovisionDevice(ctx, id, leaf, service.DeviceDeprovisionOptions{
		DrainTimeout: *drain,
		OfflineWait:  *offlineWait,
		Disable:      *disable,
		Progress: func(step string) {
			if env.Terminal {
				prog.printf("%s: %s", id, step)
			}
		},
	})
	if rep != nil {
		if *asJSON {
			if jerr := writeJSON(env.Stdout, rep); jerr != nil {
				return jerr
			}
		} else {
			printDeviceReport(env.Stdout, rep, err == nil)
		}
	}
	if err != nil {
		return svcExplainEither(s, err)
	}
	return nil
}

func printDeviceReport(w io.Writer, rep *service.DeviceReport, complete bool) {
	switch {
	case !rep.HubIdentity:
		fmt.Fprintf(w, "device %s has no hub identity: nothing to drain\n", rep.DeviceID)
	case rep.HubDisabled:
		fmt.Fprintf(w, "device %s's hub identity is disabled, so it cannot connect to drain; %s records may be left unsent\n", rep.DeviceID, unsentText(rep))
	case rep.Answer != nil:
		a := rep.Answer
		shipment := ""
		if a.ShipmentID != "" {
			shipment = " " + a.ShipmentID
		}
		sealed := "sealed shipment" + shipment
		if !a.Sealed {
			sealed = "did not seal shipment" + shipment
		}
		if a.Drained {
			fmt.Fprintf(w, "device %s %s: buffer drained, nothing left unsent\n", rep.DeviceID, sealed)
		} else {
			fmt.Fprintf(w, "device %s %s: drain timed out, %d records left unsent\n", rep.DeviceID, sealed, a.Unsent)
		}
	default:
		n := unsentText(rep)
		if rep.SentC2D {
			fmt.Fprintf(w, "device offline; sent deprovision by C2D, %s records may be left unsent\n", n)
		} else {
			fmt.Fprintf(w, "device offline; could not send deprovision by C2D (%s), %s records may be left unsent\n", rep.C2DError, n)
		}
	}
	if !complete {
		return
	}
	fmt.Fprintf(w, "device %s disenrolled (disabled individual enrollment); hub identity %s; registration record %s\n",
		rep.DeviceID, outcomeText(rep.Deregister.HubDevice), outcomeText(rep.Deregister.Registration))
}

// unsentText is the service's estimate of the records a device did not
// send, for a sentence.
func unsentText(rep *service.DeviceReport) string {
	if rep.UnsentEstimate < 0 {
		return "an unknown number of"
	}
	return fmt.Sprint(rep.UnsentEstimate)
}

func outcomeText(o string) string {
	if o == service.OutcomeAbsent {
		return "not present"
	}
	return o
}

// svcExplainEither explains an error from an operation that spans DPS and
// the hub.
func svcExplainEither(s *svcClients, err error) error {
	if p := apiErrPath(err); strings.HasPrefix(p, "/devices") || strings.HasPrefix(p, "/twins") {
		return s.hubErr(err)
	}
	return s.dpsErr(err)
}

func apiErrPath(err error) string {
	var apiErr *service.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Path
	}
	return ""
}

// deviceRow is one device of 'device list' and 'device show'.
type deviceRow struct {
	ID           string                        `json:"id"`
	Group        string                        `json:"group,omitempty"`
	Enrollment   string                        `json:"enrollment"`
	Registration *service.RegistrationState    `json:"registration,omitempty"`
	Individual   *service.IndividualEnrollment `json:"individualEnrollment,omitempty"`
	Hub          *service.Device               `json:"hub,omitempty"`
	Twin         *service.Twin                 `json:"twin,omitempty"`
}

// enrollmentText says how a device is enrolled.
func enrollmentText(e *service.IndividualEnrollment) string {
	switch {
	case e == nil:
		return "group"
	case e.ProvisioningStatus == service.StatusDisabled:
		return "disenrolled"
	}
	return "individual"
}

func cmdDeviceList(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl device list", "[--group GROUP] [--json]",
		"List devices: those registered through each enrollment group (or GROUP),\n"+
			"individually enrolled ones and those in the hub registry, with their\n"+
			"registration state, hub status and last activity.\n\n"+svcFlagsHelp)
	group := fs.String("group", "", "only devices registered through enrollment group `GROUP`")
	asJSON := fs.Bool("json", false, "print JSON")
	sf := addServiceFlags(fs, true, true)
	if err := parseFlagsOnly(env, fs, args); err != nil {
		return err
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, true)
	if err != nil {
		return err
	}
	defer cancel()
	rows := map[string]*deviceRow{}
	row := func(id string) *deviceRow {
		k := strings.ToLower(id)
		if rows[k] == nil {
			rows[k] = &deviceRow{ID: id, Enrollment: "-"}
		}
		return rows[k]
	}
	groups := []string{*group}
	if *group == "" {
		gs, err := s.dps.ListGroups(ctx)
		if err != nil {
			return s.dpsErr(err)
		}
		groups = groups[:0]
		for _, g := range gs {
			groups = append(groups, g.EnrollmentGroupID)
		}
	} else if _, err := s.dps.GetGroup(ctx, *group); service.IsNotFound(err) {
		return errNoGroup(*group)
	} else if err != nil {
		return s.dpsErr(err)
	}
	for _, g := range groups {
		regs, err := s.dps.ListRegistrations(ctx, g)
		if err != nil {
			return s.dpsErr(err)
		}
		for _, r := range regs {
			d := row(r.RegistrationID)
			d.Group, d.Enrollment = g, "group"
			d.Registration = &r
		}
	}
	enrollments, err := s.dps.ListEnrollments(ctx)
	if err != nil {
		return s.dpsErr(err)
	}
	for _, e := range enrollments {
		if *group != "" && rows[strings.ToLower(e.RegistrationID)] == nil {
			continue
		}
		d := row(e.RegistrationID)
		d.Individual = &e
		d.Enrollment = enrollmentText(&e)
		if d.Registration == nil && e.RegistrationState != nil {
			d.Registration = e.RegistrationState
		}
	}
	devices, err := s.hub.ListDevices(ctx, 0)
	if err != nil {
		return s.hubErr(err)
	}
	byDeviceID := map[string]*deviceRow{}
	for _, d := range rows {
		if d.Registration != nil && d.Registration.DeviceID != "" {
			byDeviceID[strings.ToLower(d.Registration.DeviceID)] = d
		}
	}
	for _, dev := range devices {
		d := byDeviceID[strings.ToLower(dev.DeviceID)]
		if d == nil {
			if *group != "" {
				continue
			}
			d = row(dev.DeviceID)
		}
		d.Hub = &dev
	}
	list := make([]*deviceRow, 0, len(rows))
	for _, d := range rows {
		list = append(list, d)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	if *asJSON {
		return writeJSON(env.Stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(env.Stdout, "no devices")
		return nil
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "DEVICE\tGROUP\tENROLLMENT\tREGISTRATION\tHUB\tCONNECTION\tLAST ACTIVITY")
	for _, d := range list {
		reg, hub, conn, last := "-", "-", "-", "-"
		if d.Registration != nil {
			reg = d.Registration.Status
		}
		if d.Hub != nil {
			hub, conn, last = d.Hub.Status, svcOr(d.Hub.ConnectionState), svcTime(d.Hub.LastActivityTime)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, svcOr(d.Group), d.Enrollment, reg, hub, conn, last)
	}
	return w.Flush()
}

func cmdDeviceShow(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl device show", "--id ID [--json]",
		"Show a device's individual enrollment (if disenrolled), DPS registration\n"+
			"record, hub identity and twin.\n\n"+svcFlagsHelp)
	fs.String("id", "", "device registration `ID`")
	asJSON := fs.Bool("json", false, "print JSON")
	sf := addServiceFlags(fs, true, true)
	id, err := parseID(env, fs, args)
	if err != nil {
		return err
	}
	s, ctx, cancel, err := sf.session(ctx, env, true, true)
	if err != nil {
		return err
	}
	defer cancel()
	d := &deviceRow{ID: id}
	if d.Registration, err = s.dps.GetRegistration(ctx, id); err != nil && !service.IsNotFound(err) {
		return s.dpsErr(err)
	}
	if d.Individual, err = s.dps.GetEnrollment(ctx, id); err != nil && !service.IsNotFound(err) {
		return s.dpsErr(err)
	}
	d.Enrollment = enrollmentText(d.Individual)
	deviceID := id
	if d.Registration != nil && d.Registration.DeviceID != "" {
		deviceID = d.Registration.DeviceID
	}
	if d.Hub, err = s.hub.GetDevice(ctx, deviceID); err != nil && !service.IsNotFound(err) {
		return s.hubErr(err)
	}
	if d.Hub != nil {
		if d.Twin, err = s.hub.GetTwin(ctx, deviceID); err != nil && !service.IsNotFound(err) {
			return s.hubErr(err)
		}
	}
	if d.Registration == nil && d.Individual == nil && d.Hub == nil {
		return fmt.Errorf("device %s not found: no registration record, individual enrollment or hub identity", id)
	}
	if *asJSON {
		return writeJSON(env.Stdout, d)
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "device\t%s\n", id)
	switch e := d.Individual; {
	case e == nil:
		fmt.Fprintf(w, "enrollment\tthrough a group (no individual enrollment)\n")
	case e.ProvisioningStatus == service.StatusDisabled:
		fmt.Fprintf(w, "enrollment\tdisenrolled: disabled individual enrollment since %s\n", svcTime(e.LastUpdated))
	default:
		fmt.Fprintf(w, "enrollment\tindividual (%s)\n", e.ProvisioningStatus)
	}
	if r := d.Registration; r != nil {
		fmt.Fprintf(w, "registration\t%s", r.Status)
		if r.AssignedHub != "" {
			fmt.Fprintf(w, " to %s as %s", r.AssignedHub, r.DeviceID)
		}
		if r.Substatus != "" {
			fmt.Fprintf(w, " (%s)", r.Substatus)
		}
		if r.ErrorMessage != "" {
			fmt.Fprintf(w, ": %s", r.ErrorMessage)
		}
		fmt.Fprintf(w, ", updated %s\n", svcTime(r.LastUpdated))
	} else {
		fmt.Fprintf(w, "registration\tnone\n")
	}
	if h := d.Hub; h != nil {
		auth := "-"
		if h.Authentication != nil {
			auth = h.Authentication.Type
		}
		fmt.Fprintf(w, "hub identity\t%s, %s since %s, auth %s\n", h.Status, svcOr(h.ConnectionState), svcTime(h.ConnectionStateUpdatedTime), auth)
		fmt.Fprintf(w, "last activity\t%s\n", svcTime(h.LastActivityTime))
		fmt.Fprintf(w, "pending C2D\t%d\n", h.CloudToDeviceMessageCount)
	} else {
		fmt.Fprintf(w, "hub identity\tnone\n")
	}
	if d.Twin != nil && len(d.Twin.Properties.Reported) > 0 {
		rep := map[string]any{}
		for k, v := range d.Twin.Properties.Reported {
			if !strings.HasPrefix(k, "$") {
				rep[k] = v
			}
		}
		b, _ := json.Marshal(rep)
		text := string(b)
		if len(text) > 200 {
			text = text[:199] + "…"
		}
		fmt.Fprintf(w, "reported\t%s\n", text)
	}
	return w.Flush()
}
