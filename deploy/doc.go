// Package deploy holds no code. Its folder carries what goes onto a board
// beside the trackerd binary: the systemd unit and sysusers.d entry
// (systemd/), the udev rules (udev/) and the install notes (README.md). Its
// tests check those files with the system's own tools where they are
// installed (systemd-analyze verify and security, systemd-sysusers, udevadm)
// and with small parsers otherwise.
package deploy
