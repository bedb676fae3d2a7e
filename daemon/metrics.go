package daemon

import (
	"bytes"
	"errors"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/tokend/tokend/daemon/tokens"
	"github.com/tokend/tokend/internal/buildinfo"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
)

// Label values of tokend_token_fetches_total{result}.

// metrics are tokend's Prometheus series. The names are a contract
// (README, alert rules): do not rename them.
type metrics struct {
	reg *prometheus.Registry

	fetches     *prometheus.CounterVec   // token, result
	fetchTime   *prometheus.HistogramVec // token
	vaultReads  *prometheus.CounterVec   // result
	vaultLogins *prometheus.CounterVec   // result
	requests    *prometheus.CounterVec   // verb, code
	reloads     *prometheus.CounterVec   // result
	lastReload  prometheus.Gauge
	// Sharing (share_path).
	shareReads     *prometheus.CounterVec // token, result
	shareLeases    *prometheus.CounterVec // token
	shareFallbacks *prometheus.CounterVec // token
	// The proxies ([proxy.NAME]).
	proxyRequests *prometheus.CounterVec   // proxy, code
	proxyTime     *prometheus.HistogramVec // proxy

	// requestCounters holds every verb×code counter, resolved up front:
	// counting a request must not allocate on the read path.
	requestCounters map[[2]string]prometheus.Counter
}

// newMetrics registers the series. tokens gives the per-token gauges;
// conns the open connection count.
func newMetrics(tokens func(now time.Time) []tokenState, conns func() int64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_token_fetches_total",
			Help: "Token endpoint requests, by result: success, rejected (401/invalid_client), rate_limited (429), error, budget_exhausted (not sent)."},
			[]string{"token", "result"}),
		fetchTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokend_token_fetch_duration_seconds",
			Help:    "Token endpoint request time.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
			[]string{"token"}),
		vaultReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_vault_reads_total",
			Help: "Reads of client credentials from Vault's KV, by result."}, []string{"result"}),
		vaultLogins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_vault_logins_total",
			Help: "Vault logins and re-logins, by result."}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_requests_total",
			Help: "Socket requests, by verb (BARE for connect-and-read, OTHER when none was read) and code (ok or the protocol error code)."},
			[]string{"verb", "code"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_config_reloads_total",
			Help: "Configuration reloads, by result."}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokend_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully (at start or reload)."}),
		shareReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_share_reads_total",
			Help: "Reads of a shared token's entry in Vault, by result: fresh (its token is served), due (this host refreshes it or shares its own), leased (another host is refreshing it), error, mismatch (a token for another configuration)."},
			[]string{"token", "result"}),
		shareLeases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_share_lease_acquired_total",
			Help: "Leases this host took to refresh a shared token."}, []string{"token"}),
		shareFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_share_fallback_total",
			Help: "Token requests this host made for itself because sharing failed (Vault unreachable, a lease that produced no token, a foreign entry)."},
			[]string{"token"}),
		proxyRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokend_proxy_requests_total",
			Help: "Requests a proxy answered, by HTTP status code."}, []string{"proxy", "code"}),
		proxyTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokend_proxy_request_duration_seconds",
			Help:    "How long a proxy took to answer, the upstream included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60}}, []string{"proxy"}),
		requestCounters: map[[2]string]prometheus.Counter{},
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokend_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": buildinfo.Version, "goversion": runtime.Version()}})
	buildInfo.Set(1)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, m.fetches, m.fetchTime, m.requests, m.reloads, m.lastReload,
		m.shareReads, m.shareLeases, m.shareFallbacks, m.proxyRequests, m.proxyTime,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tokend_connections", Help: "Open client connections."},
			func() float64 { return float64(conns()) }),
		&tokenCollector{states: tokens})
	for _, r := range []string{"success", "error"} {
		m.vaultReads.WithLabelValues(r)
		m.vaultLogins.WithLabelValues(r)
		m.reloads.WithLabelValues(r)
	}
	for verb, codes := range requestCodes {
		for _, code := range codes {
			m.requestCounters[[2]string{verb, code}] = m.requests.WithLabelValues(verb, code)
		}
	}
	return m
}

// Proxied implements proxy.Observer.
func (m *metrics) Proxied(proxy string, code int, took time.Duration) {
	m.proxyRequests.WithLabelValues(proxy, strconv.Itoa(code)).Inc()
	m.proxyTime.WithLabelValues(proxy).Observe(took.Seconds())
}

// vaultUsed exports the Vault series while some token uses Vault, and
// drops them when none does (a host without Vault has no Vault to watch).
func (m *metrics) vaultUsed(used bool) {
	if used {
		for _, c := range []prometheus.Collector{m.vaultReads, m.vaultLogins} {
			if err := m.reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
				panic(err) // a programming error: the series are ours
			}
		}
		return
	}
	m.reg.Unregister(m.vaultReads)
	m.reg.Unregister(m.vaultLogins)
}

// requestCodes are the verb×code pairs that can occur, created at start
// with 0 so that rate() and absent-alerts work from the first scrape.
var requestCodes = func() map[string][]string {
	tokenCodes := []string{"ok", proto.CodeDenied, proto.CodeUnknown, proto.CodeUnavailable, proto.CodeBadRequest}
	m := map[string][]string{
		string(server.VerbBare):  {"ok", proto.CodeDenied, proto.CodeUnknown, proto.CodeUnavailable, proto.CodeBusy},
		string(server.VerbOther): {proto.CodeBadRequest, proto.CodeTooLong, proto.CodeBusy},
	}
	for _, v := range proto.Verbs() {
		if v.TakesName() {
			m[string(v)] = tokenCodes
		} else {
			m[string(v)] = []string{"ok", proto.CodeBadRequest}
		}
	}
	return m
}()

// Request implements server.Meter.
func (m *metrics) Request(verb proto.Verb, code string) {
	if c := m.requestCounters[[2]string{string(verb), code}]; c != nil {
		c.Inc()
		return
	}
	m.requests.WithLabelValues(string(verb), code).Inc() // a pair requestCodes missed
}

// tokenAdded creates a token's counters with 0 for every result.
func (m *metrics) tokenAdded(name string) {
	for _, r := range tokens.FetchResults {
		m.fetches.WithLabelValues(name, r)
	}
	m.fetchTime.WithLabelValues(name)
}

// tokenShared creates a shared token's counters with 0.
func (m *metrics) tokenShared(name string) {
	for _, r := range tokens.ShareResults {
		m.shareReads.WithLabelValues(name, r)
	}
	m.shareLeases.WithLabelValues(name)
	m.shareFallbacks.WithLabelValues(name)
}

// tokenRemoved drops a token's series after a reload removed it.
func (m *metrics) tokenRemoved(name string) {
	m.fetches.DeletePartialMatch(prometheus.Labels{"token": name})
	m.fetchTime.DeleteLabelValues(name)
	for _, v := range []*prometheus.CounterVec{m.shareReads, m.shareLeases, m.shareFallbacks} {
		v.DeletePartialMatch(prometheus.Labels{"token": name})
	}
}

// fetched records one token endpoint request.
func (m *metrics) fetched(name, result string, took time.Duration) {
	m.fetches.WithLabelValues(name, result).Inc()
	if result != tokens.FetchBudget { // no request was made
		m.fetchTime.WithLabelValues(name).Observe(took.Seconds())
	}
}

// loaded records a configuration load (at start, or a reload).
func (m *metrics) loaded(err error, reload bool) {
	if err != nil {
		m.reloads.WithLabelValues("error").Inc()
		return
	}
	if reload {
		m.reloads.WithLabelValues("success").Inc()
	}
	m.lastReload.SetToCurrentTime()
}

// result is the label value for an outcome.
func result(err error) string {
	if err != nil {
		return "error"
	}
	return "success"
}

// tokenState is one token as the gauges report it.
type tokenState struct {
	name         string
	snap         tokens.Snapshot
	minRemaining time.Duration
	source       string // where the client credentials come from: "vault" or "file"
}

// tokenCollector reports the per-token gauges from the keepers'
// snapshots at scrape time, so they are never stale.
type tokenCollector struct {
	states func(now time.Time) []tokenState
}

var (
	descValid = prometheus.NewDesc("tokend_token_valid",
		"1 while the token is servable (at least min_remaining left), else 0.", []string{"token"}, nil)
	descExpiry = prometheus.NewDesc("tokend_token_expiration_timestamp_seconds",
		"When the current token expires (Unix time); absent before the first token.", []string{"token"}, nil)
	descNext = prometheus.NewDesc("tokend_token_next_refresh_timestamp_seconds",
		"When the next token request is due (Unix time).", []string{"token"}, nil)
	descFailures = prometheus.NewDesc("tokend_token_consecutive_failures",
		"Failed attempts since the last success.", []string{"token"}, nil)
	// Not in the table: the alert rules compare expiry with it.
	descMinRemaining = prometheus.NewDesc("tokend_token_min_remaining_seconds",
		"The token's min_remaining: it is served while at least this much is left.", []string{"token"}, nil)
	descInfo = prometheus.NewDesc("tokend_token_info",
		"Always 1; source says where the token's client credentials come from: vault or file.", []string{"token", "source"}, nil)
)

func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descValid
	ch <- descExpiry
	ch <- descNext
	ch <- descFailures
	ch <- descMinRemaining
	ch <- descInfo
}

func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.states(time.Now()) {
		valid := 0.0
		if t.snap.Servable {
			valid = 1
		}
		ch <- prometheus.MustNewConstMetric(descValid, prometheus.GaugeValue, valid, t.name)
		if t.snap.Token != nil {
			ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, unixSeconds(t.snap.Token.ExpiresAt), t.name)
		}
		if !t.snap.Next.IsZero() {
			ch <- prometheus.MustNewConstMetric(descNext, prometheus.GaugeValue, unixSeconds(t.snap.Next), t.name)
		}
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.GaugeValue, float64(t.snap.Failures), t.name)
		ch <- prometheus.MustNewConstMetric(descMinRemaining, prometheus.GaugeValue, t.minRemaining.Seconds(), t.name)
		ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, t.name, t.source)
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// exposition is the text format (0.0.4) of the series whose token label,
// if any, keep accepts: what METRICS answers a peer.
func (m *metrics) exposition(keep func(token string) bool) ([]byte, error) {
	families, err := m.reg.Gather()
	if err != nil && len(families) == 0 {
		return nil, err
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		f.Metric = slices.DeleteFunc(f.Metric, func(mt *dto.Metric) bool {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "token" {
					return !keep(l.GetValue())
				}
			}
			return false
		})
		if len(f.Metric) == 0 {
			continue
		}
		if err := enc.Encode(f); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}
