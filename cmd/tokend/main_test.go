package main

import (
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
)

// The tests here run the real tokend and tokenctl binaries against real
// and stand-in peers (daemontest): a missing peer skips loudly, or fails
// under TOKEND_E2E=1.
func TestMain(m *testing.M) { daemontest.Main(m) }
