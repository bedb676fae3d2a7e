package daemon

import (
	"context"
	"errors"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/tokend/tokend/socket/proto"
)

// supervise reports readiness and status to systemd and pets the watchdog.
// READY=1 goes out once every token has been obtained, so units ordered
// after tokend start with a working token. The watchdog is pinged only
// while the daemon proves itself alive: no keeper stuck in an attempt far
// past its deadlines, and the socket answering PING. A token endpoint that
// is down is no reason to stop: a restart would not bring it back.
func (d *daemon) supervise(ctx context.Context, n *notifier) {
	tick := time.Second
	if n.watchdog > 0 {
		tick = min(tick, n.watchdog/2)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	last := ""
	var lastPet time.Time
	for {
		status := d.status()
		switch {
		case !d.ready.Load() && d.allReady():
			n.send(sddaemon.SdNotifyReady + "\n" + statusLine(status))
			// After the send: a reload that sees it ready may now announce itself.
			d.ready.Store(true)
			d.log.Info().Str("status", status).Msg("ready")
		case status != last:
			n.send(statusLine(status))
		}
		last = status
		if n.watchdog > 0 && time.Since(lastPet) >= n.watchdog/2-tick/2 {
			if err := d.alive(); err != nil {
				d.log.Error().Err(err).Msg("health check failed; not petting the watchdog")
			} else {
				n.send(sddaemon.SdNotifyWatchdog)
				lastPet = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.poke:
		}
	}
}

// alive checks the parts whose wedging a restart would cure.
func (d *daemon) alive() error {
	now := time.Now()
	for name, e := range d.reg.Load().entries {
		if e.k.Wedged(now) {
			return &wedgedError{name}
		}
	}
	addr := d.ln.Addr().String()
	c := proto.Client{Path: addr, Timeout: 2 * time.Second}
	_, err := c.Do(context.Background(), "PING")
	var perr *proto.Error
	if errors.As(err, &perr) && perr.Code == proto.CodeBusy {
		return nil // answering "busy" under a flood is alive, not wedged
	}
	return err
}

type wedgedError struct{ token string }

func (e *wedgedError) Error() string {
	return "the refresh loop of token " + e.token + " is stuck far past its deadlines"
}
