// Package identity is the tracker's on-device identity store: the X.509
// certificate chain and private key the board authenticates with, the
// cached result of its last DPS registration (the assignment), and the CA
// certificates it trusts for the DPS and IoT Hub servers.
//
// # State directory
//
// [Open] owns a state directory (by default /var/lib/trackerd), which must
// belong to the user the daemon runs as and is kept at mode 0700. Inside it:
//
//   - assignment.json: the cached [Assignment] (mode 0600);
//   - device.chain.pem and device.key.pem: a device identity imported with
//     [Store.ImportIdentity], for example from an SD card's boot partition
//     (the key mode 0600).
//
// Every file is replaced atomically (temporary file, fsync, rename, fsync
// of the directory), so a power cut leaves either the old or the new
// content. A damaged assignment file is reported as a *[CorruptError] that
// also matches [ErrNotProvisioned]: the device provisions again instead of
// failing to start.
//
// # Keys
//
// An [Identity] holds its private key as a crypto.Signer, never as raw
// bytes, so a TPM or secure element can provide the key later without
// changes to the code that uses it. Key material is never logged or put in
// an error; an Identity logs as its subject, thumbprint and validity.
//
// # Trust
//
// [AzureRootsPEM] embeds the public roots of Azure's DPS and IoT Hub
// endpoints; [TrustPool] combines them with a configured bundle, such as
// the local emulator's CA.
//
// # Concurrency
//
// A Store has no goroutines. Its methods are safe for concurrent use by
// one process; two processes writing the same state directory are not
// coordinated (the daemon is the only writer). Identity values are
// read-only once loaded.
package identity
