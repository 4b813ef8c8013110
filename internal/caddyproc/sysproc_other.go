//go:build !linux

package caddyproc

import "syscall"

// sysProcAttr: Pdeathsig is Linux's; elsewhere a child may outlive a killed
// parent.
func sysProcAttr() *syscall.SysProcAttr { return nil }
