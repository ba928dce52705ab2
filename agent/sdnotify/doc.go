// Package sdnotify tells systemd how the daemon is doing: readiness, a
// free-form status line, shutdown, and watchdog keep-alives, using the
// sd_notify datagram protocol (sd_notify(3)) with no cgo and no dependency.
//
// # Notifier
//
// A [Notifier] sends one datagram per call to the socket named by
// $NOTIFY_SOCKET: a file system path, or an abstract socket written with a
// leading '@'. Without NOTIFY_SOCKET (the daemon started by hand or in a test)
// every method is a no-op that returns nil. Only main reads the environment;
// it passes its getenv function to [FromEnv].
//
// # Supervisor
//
// A [Supervisor] owns the watchdog. Long-lived components register with
// [Supervisor.Register], which returns a [Heartbeat], and call
// [Heartbeat.Beat] whenever they make progress (a sample taken, a batch
// acknowledged, a loop iteration done). [Supervisor.Run] sends WATCHDOG=1 at
// half the watchdog interval, but only while every registered component has
// beaten within its own allowed staleness. When one stalls, the supervisor
// stops feeding the watchdog, so systemd restarts the service once
// WatchdogSec= passes, and sets STATUS= to name the stalled components so
// "systemctl status trackerd" says why.
//
// # Concurrency
//
// Notifier and Supervisor methods are safe for concurrent use. Run starts no
// goroutine: it runs on its caller's goroutine until the context ends.
package sdnotify
