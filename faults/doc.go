//go:build linux

// Package faults is the fault suite behind callhook's delivery promise:
// nothing answered 202 is ever lost. Its tests build the repository's Caddy,
// run it as a real process against receivers on 127.0.0.1 and break things
// around it (kill -9, reloads, dead and black-holed receivers, a full queue,
// a full disk, SIGTERM mid-attempt). Each scenario fails on any accepted
// delivery that never arrives and prints one summary line.
//
// The package holds only tests. Run them with `go test ./faults` (add -v to
// see the summary lines), and the soak with
// `go test ./faults -run TestSoak -soak=10m -timeout 30m -v`.
package faults
