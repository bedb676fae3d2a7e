package daemon

import (
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket"
)

// notifier speaks sd_notify. Outside systemd (no NOTIFY_SOCKET) every call
// is a cheap no-op, which is normal, not an error.
type notifier struct {
	log      zerolog.Logger
	watchdog time.Duration // WATCHDOG_USEC, 0 when off
}

func newNotifier(log zerolog.Logger) *notifier {
	wd, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn().Err(err).Msg("ignoring malformed WATCHDOG_USEC")
	}
	return &notifier{log: log, watchdog: wd}
}

func (n *notifier) send(state string) {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		n.log.Warn().Err(err).Msg("sd_notify failed")
	}
}

func monotonicUsec() string { return sddaemon.SdNotifyMonotonicUsec() }

// statusLine is the STATUS= assignment for status. Its parts are cleaned
// where they enter; cleaning the whole again guarantees one line, so no
// text can add an assignment (READY=1, WATCHDOG=trigger) of its own.
func statusLine(status string) string { return "STATUS=" + socket.CleanN(status, 2000) }
