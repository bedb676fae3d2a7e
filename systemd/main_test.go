package systemd

import (
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
)

func TestMain(m *testing.M) { daemontest.Main(m) }
