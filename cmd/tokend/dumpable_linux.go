package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// undumpable keeps the process, which holds client secrets and tokens, out
// of core dumps and away from ptrace by other processes of the same user.
func undumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	return nil
}
