package daemon

import (
	"time"

	"github.com/tokend/tokend/daemon/tokens"
	"github.com/tokend/tokend/vaultsrc"
)

// tokenObserver is the daemon's observer of the token called name.
type tokenObserver struct {
	d    *daemon
	name string
}

var _ tokens.Observer = tokenObserver{}

func (o tokenObserver) Attempted() { o.d.pokeSupervisor() }

func (o tokenObserver) Fetched(result string, took time.Duration) {
	o.d.metrics.fetched(o.name, result, took)
}

func (o tokenObserver) ShareRead(result string) {
	o.d.metrics.shareReads.WithLabelValues(o.name, result).Inc()
}

func (o tokenObserver) ShareLeased() { o.d.metrics.shareLeases.WithLabelValues(o.name).Inc() }

func (o tokenObserver) FellBack() { o.d.metrics.shareFallbacks.WithLabelValues(o.name).Inc() }

// vaultObserver counts the Vault source's reads and logins.
type vaultObserver struct{ m *metrics }

var _ vaultsrc.Observer = vaultObserver{}

func (o vaultObserver) Read(err error)  { o.m.vaultReads.WithLabelValues(result(err)).Inc() }
func (o vaultObserver) Login(err error) { o.m.vaultLogins.WithLabelValues(result(err)).Inc() }
