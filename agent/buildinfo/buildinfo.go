// Package buildinfo reports the version of the tracker binaries.
//
// Version and Commit are stamped at link time by the Makefile:
//
//	go build -ldflags "-X github.com/coldchain/tracker/agent/buildinfo.Version=v1.2.3 \
//	                   -X github.com/coldchain/tracker/agent/buildinfo.Commit=abc1234"
//
// A binary built without those flags reports "dev" and the VCS revision Go
// embedded, if any.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"time"
)

// Version is the release version, set with -ldflags -X.
var Version = "dev"

// Commit is the source revision, set with -ldflags -X.
var Commit = ""

// Date is the build time in RFC 3339, set with -ldflags -X. The agent uses
// it as a floor for the wall clock on boards without a real-time clock.
var Date = ""

// Revision returns Commit, or the VCS revision recorded by the Go toolchain.
func Revision() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				if len(s.Value) > 12 {
					return s.Value[:12]
				}
				return s.Value
			}
		}
	}
	return "unknown"
}

// BuildTime returns the stamped build time, or the zero time if none was stamped
// or it does not parse.
func BuildTime() time.Time {
	t, err := time.Parse(time.RFC3339, Date)
	if err != nil {
		return time.Time{}
	}
	return t
}

// String returns a one-line description such as
// "trackerd v1.2.3 (commit abc1234, go1.26.8 linux/arm)".
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, built %s, %s %s/%s)", program, Version, Revision(),
		orUnknown(Date), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
