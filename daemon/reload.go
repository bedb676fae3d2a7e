package daemon

import (
	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/tokend/tokend/daemon/config"
)

// Reloading: a new configuration replaces the old one, or the old one
// keeps serving.

// reloadNotified reloads, telling systemd once it is ready: before the
// first READY=1 a reload is not systemd's business, and READY=1 after it
// would announce tokens that do not exist yet.
func (d *daemon) reloadNotified() {
	ready := d.ready.Load()
	if ready {
		d.notify.send(sddaemon.SdNotifyReloading + "\n" + monotonicUsec())
	}
	d.reload()
	if ready {
		d.notify.send(sddaemon.SdNotifyReady + "\n" + statusLine(d.status()))
	}
}

// reload applies a new configuration file, or keeps the old one serving.
func (d *daemon) reload() {
	cfg, rep, err := config.Check(d.path, config.CheckOptions{Activated: d.activated})
	if err != nil {
		d.log.Error().Err(err).Msg("reload failed; the previous configuration keeps serving")
		d.metrics.loaded(err, true)
		return
	}
	d.warn(rep)
	old := d.cfg
	if cfg.Listen != old.Listen {
		d.log.Warn().Msg("socket, socket_mode, socket_group and idle_timeout changes take effect at the next restart")
	}
	if proxiesChanged(old, cfg) {
		d.log.Warn().Msg("[proxy.NAME] changes take effect at the next restart")
	}
	if cfg.MetricsListen != old.MetricsListen {
		d.log.Warn().Str("metrics_listen", cfg.MetricsListen).Str("serving", old.MetricsListen).Msg("metrics_listen changes take effect at the next restart")
	}
	if err := d.useVault(cfg, old); err != nil {
		d.log.Error().Err(err).Msg("reload failed; the previous configuration keeps serving")
		d.metrics.loaded(err, true)
		return
	}
	d.logw.SetLevel(cfg.LogLevel)
	d.srv.SetMaxConns(cfg.MaxConnections)
	d.srv.SetMaxPerUID(cfg.MaxPerUID)
	prev := d.reg.Load()
	next := d.newRegistry(cfg, prev)
	d.install(next)
	close(prev.replaced)
	var kept, stopped []string
	for name, e := range prev.entries {
		if n := next.entries[name]; n != nil && n.k == e.k {
			kept = append(kept, name)
		} else {
			e.cancel()
			stopped = append(stopped, name)
		}
		if next.entries[name] == nil {
			d.metrics.tokenRemoved(name)
		}
	}
	d.cfg = cfg
	d.metrics.loaded(nil, true)
	d.log.Info().Strs("kept", kept).Strs("restarted_or_removed", stopped).Int("tokens", len(next.names)).Msg("configuration reloaded")
}

// warn logs the operator mistakes that tokend can still run with.
func (d *daemon) warn(rep config.Report) {
	for _, w := range rep.Warnings {
		d.log.Warn().Str("problem", w).Msg("unsafe configuration")
	}
}
