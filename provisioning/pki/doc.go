// Package pki is the fleet's X.509 public key infrastructure: a root CA
// (optionally with an intermediate that signs devices), device leaf
// certificates whose subject CN is the DPS registration ID, server
// certificates for the local emulator, and the proof-of-possession
// ("verification") certificates Azure asks for when a CA is uploaded to DPS or
// IoT Hub.
//
// # Certificates
//
// CA certificates carry what Azure requires: basicConstraints CA:TRUE
// (critical), keyUsage keyCertSign and cRLSign (critical), a subject key
// identifier and an authority key identifier. The root's
// path length is 1, so it can sign one level of intermediates (now, or later
// for a second factory); an intermediate's is 0, so it only signs leaves.
// Serial numbers are 128 random bits. Every certificate starts [Backdate]
// before the time it was issued, to tolerate small clock differences between
// the operator's workstation and the boards.
//
// Device leaves are not CAs, have keyUsage digitalSignature (plus
// keyEncipherment for RSA keys) and extKeyUsage clientAuth. A leaf never
// outlives its issuer unless its validity is set explicitly.
//
// # Files
//
// A CA directory (mode 0700) holds root.pem and root.key, and with an
// intermediate also intermediate.pem and intermediate.key. The root key may
// be removed (kept offline) once an intermediate exists: [LoadCA] then loads
// a CA that can still issue devices.
//
// A device directory DIR/<id> (mode 0700) holds cert.pem (the leaf),
// chain.pem (the leaf followed by the intermediates, what the device sends
// in its TLS handshake) and key.pem (PKCS#8, mode 0600).
//
// Every file is written atomically: a temporary file in the same directory,
// fsync, rename (or link when an existing file must not be replaced), fsync
// of the directory. Existing files are only replaced when the caller asks
// for it (force).
//
// # Concurrency
//
// A [CA] and a [Device] are read-only once built and safe for concurrent
// use; [CA.IssueMany] issues in parallel from goroutines it owns and waits
// for before returning. The package starts no other goroutines and never
// logs.
package pki
