package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

// Environment variables holding the service connection strings.
const (
	envDPSConnectionString = "DPS_CONNECTION_STRING"
	envHubConnectionString = "IOTHUB_CONNECTION_STRING"
)

// svcEmulatorFile is the file `trackerctl emulator --state DIR` writes.
const svcEmulatorFile = "emulator.json"

// serviceFlags are the flags that say where the DPS and IoT Hub service
// APIs are and how to authenticate: connection strings from flags or the
// environment, or a local emulator's state directory.
type serviceFlags struct {
	dps, hub, emulator string
}

func addServiceFlags(fs *flag.FlagSet, dps, hub bool) *serviceFlags {
	sf := &serviceFlags{}
	if dps {
		fs.StringVar(&sf.dps, "dps-connection-string", "", "DPS service `connection string` (default $"+envDPSConnectionString+")")
	}
	if hub {
		fs.StringVar(&sf.hub, "hub-connection-string", "", "IoT Hub service `connection string` (default $"+envHubConnectionString+")")
	}
	fs.StringVar(&sf.emulator, "emulator", "", "use the local emulator whose state `directory` holds "+svcEmulatorFile)
	return sf
}

// emulatorInfo is what trackerctl needs of emulator.json.
type emulatorInfo struct {
	HTTPSURL            string `json:"httpsUrl"`
	DPSConnectionString string `json:"dpsConnectionString"`
	HubConnectionString string `json:"hubConnectionString"`
	ServerCAFile        string `json:"serverCaFile"`
	HubHost             string `json:"hubHost"`
	DPSHost             string `json:"dpsHost"`
	IDScope             string `json:"idScope"`
}

// JSON names of the emulator.json fields each use of it needs.
var (
	emulatorServiceFields = []string{"httpsUrl", "serverCaFile"}
	emulatorDeviceFields  = []string{"dpsHost", "idScope", "serverCaFile"}
)

// readEmulatorInfo reads dir/emulator.json and checks that it has the
// fields named in need (by their JSON names). A relative serverCaFile is
// taken as relative to dir.
func readEmulatorInfo(dir string, need ...string) (*emulatorInfo, error) {
	path := filepath.Join(dir, svcEmulatorFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no %s in %s: start the emulator with 'trackerctl emulator --state %s' first", svcEmulatorFile, dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read emulator info: %w", err)
	}
	var info emulatorInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	have := map[string]string{
		"httpsUrl": info.HTTPSURL, "serverCaFile": info.ServerCAFile,
		"dpsHost": info.DPSHost, "idScope": info.IDScope,
	}
	var missing []string
	for _, name := range need {
		if have[name] == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks %s; restart the emulator to rewrite it", path, strings.Join(missing, ", "))
	}
	if info.ServerCAFile != "" && !filepath.IsAbs(info.ServerCAFile) {
		info.ServerCAFile = filepath.Join(dir, info.ServerCAFile)
	}
	return &info, nil
}

// svcEmulatorClient returns an HTTP client trusting only the emulator's CA.
func svcEmulatorClient(caFile string) (*http.Client, error) {
	certs, err := pki.ReadCertsFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("emulator CA: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

// svcClients are the resolved clients of one command.
type svcClients struct {
	dps *service.DPSClient
	hub *service.HubClient
	// hubHost is the host name devices are assigned to by default: the
	// emulator's hub, or the hub connection string's host.
	hubHost string
	// dpsSource and hubSource say where each connection string came from,
	// for error messages.
	dpsSource, hubSource string
}

// connect builds the clients a command needs (DPS, hub or both).
func (sf *serviceFlags) connect(env *cmdline.Env, needDPS, needHub bool) (*svcClients, error) {
	s := &svcClients{}
	var opts service.Options
	dpsCS, hubCS := sf.dps, sf.hub
	s.dpsSource, s.hubSource = "--dps-connection-string", "--hub-connection-string"
	if sf.emulator != "" {
		info, err := readEmulatorInfo(sf.emulator, emulatorServiceFields...)
		if err != nil {
			return nil, err
		}
		hc, err := svcEmulatorClient(info.ServerCAFile)
		if err != nil {
			return nil, err
		}
		opts = service.Options{HTTPClient: hc, BaseURL: info.HTTPSURL}
		if dpsCS == "" {
			dpsCS, s.dpsSource = info.DPSConnectionString, "the emulator's "+svcEmulatorFile
		}
		if hubCS == "" {
			hubCS, s.hubSource = info.HubConnectionString, "the emulator's "+svcEmulatorFile
		}
		s.hubHost = info.HubHost
	}
	if dpsCS == "" {
		dpsCS, s.dpsSource = env.Env(envDPSConnectionString), "$"+envDPSConnectionString
	}
	if hubCS == "" {
		hubCS, s.hubSource = env.Env(envHubConnectionString), "$"+envHubConnectionString
	}
	if needDPS {
		cs, err := parseServiceCS("DPS", dpsCS, s.dpsSource, "--dps-connection-string", envDPSConnectionString)
		if err != nil {
			return nil, err
		}
		if s.dps, err = service.NewDPS(cs, opts); err != nil {
			return nil, err
		}
	}
	if needHub || hubCS != "" {
		cs, err := parseServiceCS("IoT Hub", hubCS, s.hubSource, "--hub-connection-string", envHubConnectionString)
		if err != nil {
			return nil, err
		}
		if s.hub, err = service.NewHub(cs, opts); err != nil {
			return nil, err
		}
		if s.hubHost == "" {
			s.hubHost = cs.HostName
		}
	}
	return s, nil
}

// parseServiceCS parses the connection string cs of service what, which
// came from source; an empty one is an error naming flagName and envName.
func parseServiceCS(what, cs, source, flagName, envName string) (service.ConnectionString, error) {
	if cs == "" {
		return service.ConnectionString{}, fmt.Errorf("no %s connection string: pass %s, set %s, or use --emulator DIR", what, flagName, envName)
	}
	parsed, err := service.ParseConnectionString(cs)
	if err != nil {
		return service.ConnectionString{}, fmt.Errorf("%s connection string from %s: %w", what, source, err)
	}
	return parsed, nil
}

// dpsErr turns a DPS error into an operator's message.
func (s *svcClients) dpsErr(err error) error { return svcExplain(err, "DPS", s.dpsSource) }

// hubErr turns an IoT Hub error into an operator's message.
func (s *svcClients) hubErr(err error) error { return svcExplain(err, "IoT Hub", s.hubSource) }

func svcExplain(err error, what, source string) error {
	var apiErr *service.APIError
	switch {
	case err == nil:
		return nil
	case service.IsUnauthorized(err):
		return fmt.Errorf("%s refused the request: the connection string's key was refused (check %s; the policy needs write access): %w", what, source, err)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusTooManyRequests:
		return fmt.Errorf("%s is throttling requests; wait a minute and rerun: %w", what, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s did not answer in time: %w", what, err)
	}
	return err
}

// svcTimeout bounds a single-object command.
const svcTimeout = 2 * time.Minute

// session connects like connect and bounds the command by svcTimeout. The
// caller defers cancel once err is nil.
func (sf *serviceFlags) session(ctx context.Context, env *cmdline.Env, needDPS, needHub bool) (*svcClients, context.Context, context.CancelFunc, error) {
	s, err := sf.connect(env, needDPS, needHub)
	if err != nil {
		return nil, ctx, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, svcTimeout)
	return s, ctx, cancel, nil
}

// errNoGroup says that enrollment group id does not exist.
func errNoGroup(id string) error {
	return fmt.Errorf("no enrollment group %s in DPS (see 'trackerctl group list')", id)
}
