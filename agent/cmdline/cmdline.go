// Package cmdline is the small subcommand framework shared by trackerd and
// trackerctl: a table of commands, stdlib flag sets, usage errors that print
// help and exit with status 2, and an Env that carries the process's standard
// streams so commands can be tested without a subprocess.
package cmdline

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// Env is what a command may touch of its process. Commands never use os.Stdout,
// os.Getenv or os.Exit directly, so tests can run them in-process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment; nil means no variables are set.
	Getenv func(string) string
	// Logger is the root logger built by main.
	Logger *slog.Logger
	// Terminal reports whether Stderr is an interactive terminal (for
	// progress bars).
	Terminal bool
}

// OSEnv returns an Env bound to the process's real streams.
func OSEnv(logger *slog.Logger) *Env {
	return &Env{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Getenv: os.Getenv, Logger: logger, Terminal: IsTerminal(os.Stderr),
	}
}

// Env returns the value of the environment variable key.
func (e *Env) Env(key string) string {
	if e.Getenv == nil {
		return ""
	}
	return e.Getenv(key)
}

// Log returns the env's logger, or one that discards everything.
func (e *Env) Log() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

// IsTerminal reports whether f is a character device (a terminal or serial
// console).
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return fi.Mode()&os.ModeCharDevice != 0
}

// Command is one subcommand.
type Command struct {
	Name    string
	Summary string // one line, shown in the command list
	// Run executes the command with the arguments that follow its name.
	Run func(ctx context.Context, env *Env, args []string) error
}

// UsageError reports wrong arguments. Main prints it with a hint to use
// -help and exits with status 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// ExitError carries a specific exit status with an optional message.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Dispatch runs the command named by args[0] from cmds and returns the exit
// status: 0 on success, 2 on a usage error, 1 on any other error, which is
// printed to env.Stderr as "program: message".
func Dispatch(ctx context.Context, program, about string, cmds []Command, args []string, env *Env) int {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "%s\n\nUsage:\n  %s <command> [flags] [args]\n\nCommands:\n", about, program)
		sorted := append([]Command(nil), cmds...)
		sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
		for _, c := range sorted {
			fmt.Fprintf(w, "  %-14s %s\n", c.Name, c.Summary)
		}
		fmt.Fprintf(w, "\nRun '%s <command> -help' for the flags of a command.\n", program)
	}
	if len(args) == 0 {
		usage(env.Stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			args = []string{args[1], "-help"}
			break
		}
		usage(env.Stdout)
		return 0
	}
	for _, c := range cmds {
		if c.Name == args[0] {
			return report(program+" "+c.Name, c.Run(ctx, env, args[1:]), env)
		}
	}
	fmt.Fprintf(env.Stderr, "%s: unknown command %q\n\n", program, args[0])
	usage(env.Stderr)
	return 2
}

// Sub dispatches a second-level command ("trackerctl pki issue ...") and
// returns an error suitable for Dispatch.
func Sub(ctx context.Context, env *Env, parent string, cmds []Command, args []string) error {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: %s <command> [flags]\n\nCommands:\n", parent)
		for _, c := range cmds {
			fmt.Fprintf(w, "  %-14s %s\n", c.Name, c.Summary)
		}
	}
	if len(args) == 0 {
		usage(env.Stderr)
		return &ExitError{Code: 2}
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(env.Stdout)
		return nil
	}
	for _, c := range cmds {
		if c.Name == args[0] {
			return c.Run(ctx, env, args[1:])
		}
	}
	usage(env.Stderr)
	return Usagef("unknown %s command %q", parent, args[0])
}

func report(name string, err error, env *Env) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(env.Stderr, "%s: %s\nRun '%s -help' for usage.\n", name, ue.Msg, name)
		return 2
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintf(env.Stderr, "%s: %v\n", name, ee.Err)
		}
		return ee.Code
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintf(env.Stderr, "%s: interrupted\n", name)
		return 130
	}
	fmt.Fprintf(env.Stderr, "%s: %v\n", name, err)
	return 1
}

// FlagSet returns a flag set that prints "Usage: name synopsis", a
// description and the flag defaults to env.Stdout on -help and never exits
// the process.
func FlagSet(env *Env, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s %s\n", name, synopsis)
		if description != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(description))
		}
		var has bool
		fs.VisitAll(func(*flag.Flag) { has = true })
		if has {
			fmt.Fprintf(w, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// Parse parses args with fs. On -help it prints usage to env.Stdout and
// returns flag.ErrHelp (which Dispatch treats as success); on a bad flag it
// returns a *UsageError.
func Parse(env *Env, fs *flag.FlagSet, args []string) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(env.Stdout)
			fs.Usage()
			return flag.ErrHelp
		}
		if a == "--" {
			break
		}
	}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	return nil
}

// Require returns a usage error naming every flag in names whose value is
// empty.
func Require(fs *flag.FlagSet, names ...string) error {
	var missing []string
	for _, n := range names {
		f := fs.Lookup(n)
		if f == nil || f.Value.String() == "" {
			missing = append(missing, "-"+n)
		}
	}
	if len(missing) > 0 {
		return Usagef("missing required flag %s", strings.Join(missing, ", "))
	}
	return nil
}
