package daemon

import "time"

// observer is told what a keeper and its sharer do: the metrics count it,
// the supervisor reports it. It is the one way out of a keeper besides
// its readers.
type observer interface {
	// attempted follows every attempt at a token, whatever its outcome.
	attempted()
	// fetched follows every token endpoint request: its result (the
	// fetchResults) and how long it took.
	fetched(result string, took time.Duration)
	// shareRead follows every read of the shared entry (shareResults).
	shareRead(result string)
	// shareLeased follows a lease this host took: one token request.
	shareLeased()
	// fellBack follows a token request this host made alone because
	// sharing failed.
	fellBack()
}

// nobody observes nothing.
type nobody struct{}

func (nobody) attempted()                    {}
func (nobody) fetched(string, time.Duration) {}
func (nobody) shareRead(string)              {}
func (nobody) shareLeased()                  {}
func (nobody) fellBack()                     {}

// tokenObserver is the daemon's observer of the token called name.
type tokenObserver struct {
	d    *daemon
	name string
}

var _ observer = tokenObserver{}

func (o tokenObserver) attempted() { o.d.pokeSupervisor() }

func (o tokenObserver) fetched(result string, took time.Duration) {
	o.d.metrics.fetched(o.name, result, took)
}

func (o tokenObserver) shareRead(result string) {
	o.d.metrics.shareReads.WithLabelValues(o.name, result).Inc()
}

func (o tokenObserver) shareLeased() { o.d.metrics.shareLeases.WithLabelValues(o.name).Inc() }

func (o tokenObserver) fellBack() { o.d.metrics.shareFallbacks.WithLabelValues(o.name).Inc() }
