//go:build !linux

package testenv

// launcherSupported: elsewhere the control plane runs unwrapped; the next
// New removes what a process that died hard left.
const launcherSupported = false
