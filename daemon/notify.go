package daemon

import (
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket/proto"
)

// notifier speaks sd_notify. Outside systemd (no NOTIFY_SOCKET) every call
// is a cheap no-op, which is normal, not an error.
type notifier struct {
	log      zerolog.Logger
	sendTo   func(state string) error
	watchdog time.Duration // 0 when off
}

// newNotifier sends with send, or to systemd's NOTIFY_SOCKET when send is
// nil (the watchdog interval then comes from WATCHDOG_USEC).
func newNotifier(log zerolog.Logger, send func(string) error, watchdog time.Duration) *notifier {
	if send == nil {
		send = func(state string) error {
			_, err := sddaemon.SdNotify(false, state)
			return err
		}
		wd, err := sddaemon.SdWatchdogEnabled(false)
		if err != nil {
			log.Warn().Err(err).Msg("ignoring malformed WATCHDOG_USEC")
		}
		watchdog = wd
	}
	return &notifier{log: log, sendTo: send, watchdog: watchdog}
}

func (n *notifier) send(state string) {
	if err := n.sendTo(state); err != nil {
		n.log.Warn().Err(err).Msg("sd_notify failed")
	}
}

func monotonicUsec() string { return sddaemon.SdNotifyMonotonicUsec() }

// statusLine is the STATUS= assignment for status. Its parts are cleaned
// where they enter; cleaning the whole again guarantees one line, so no
// text can add an assignment (READY=1, WATCHDOG=trigger) of its own.
func statusLine(status string) string { return "STATUS=" + proto.CleanN(status, 2000) }
