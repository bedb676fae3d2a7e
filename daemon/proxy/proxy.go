// Package proxy is tokend's local authenticating proxy ([proxy.NAME]): an
// HTTP listener on a Unix socket or loopback TCP that forwards every
// request to one upstream with the token in Authorization, for programs
// that cannot do OAuth themselves (a vendor binary that takes a base URL,
// a script that must not see a token). The token's allow lists apply to
// the callers: by SO_PEERCRED on a Unix socket, and on loopback TCP by
// the uid that owns the caller's socket, which the kernel knows.
//
// It is not an open proxy: only the upstream is ever contacted; CONNECT
// and absolute-form requests are refused.
package proxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
)

// Observer is told of every request the proxy answered (for the metrics).
type Observer interface {
	Proxied(proxy string, code int, took time.Duration)
}

// Deps is what a proxy needs from the daemon.
type Deps struct {
	Tokens server.Tokens // the token, with the caller's access checked
	// ClientCert is the token's client certificate (tls_client_auth), so
	// that certificate-bound tokens work upstream; nil: none.
	ClientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	Roots      *x509.CertPool // the upstream's roots: the system's when nil (ca_file adds to them)
	// DPoP: a proof for a request with the token, and the nonce a
	// resource server gave; nil for a token that is not DPoP.
	Proof    func(token, method, url string) (string, error)
	Nonce    func(url, nonce string)
	Observer Observer
	Log      zerolog.Logger
	// MaxPerUID caps a uid's open connections (max_connections_per_uid);
	// root and tokend's own uid are exempt.
	MaxPerUID int
	// IdleTimeout closes a keep-alive connection idle that long, and
	// bounds the wait for a request's headers (a slowloris caller cannot
	// pin a connection).
	IdleTimeout time.Duration
}

// Proxy serves one [proxy.NAME].
type Proxy struct {
	cfg      config.Proxy
	upstream *url.URL
	deps     Deps
	rp       *httputil.ReverseProxy
	srv      *http.Server
	conns    *perUID
	// warnings are what callers can provoke (refusals, denials), logged
	// as on the token socket: once, then summed per uid per interval.
	warnings server.LimitedLog
}

// replayMax is the largest request body kept in memory so that the
// request can be sent again after the upstream rejected the token; a
// larger body streams through, and such a request is not retried.
const replayMax = 64 << 10

// New makes the proxy cfg describes. roots is the upstream's TLS trust.
func New(cfg config.Proxy, deps Deps) *Proxy {
	p := &Proxy{cfg: cfg, upstream: cfg.UpstreamURL(), deps: deps, conns: newPerUID(deps.MaxPerUID)}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: deps.ClientCert, RootCAs: deps.Roots}
	transport := &http.Transport{
		Proxy:                 nil, // only the upstream is ever contacted, never through HTTP_PROXY
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:       p.rewrite,
		Transport:     &retry{base: transport, p: p},
		FlushInterval: -1, // stream: server-sent events and long downloads arrive as they come
		ErrorHandler:  p.upstreamFailed,
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: min(deps.IdleTimeout, 10*time.Second),
		IdleTimeout:       deps.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       connContext,
	}
	return p
}

// Serve answers the callers on ln until Shutdown.
func (p *Proxy) Serve(ln net.Listener) error {
	err := p.srv.Serve(&listener{Listener: ln, p: p})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, and waits for requests in flight until ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error { return p.srv.Shutdown(ctx) }

// call is one request's state, for rewrite and the retry.
type call struct {
	peer  server.Peer
	tok   proto.Token
	proof string // the DPoP proof for the first attempt; "" for a bearer token
}

// dpop reports whether the call's token is DPoP-bound.
func (c *call) dpop() bool { return strings.EqualFold(c.tok.Type, "DPoP") }

type callKey struct{}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	peer, _ := r.Context().Value(peerKey{}).(server.Peer)
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		took := time.Since(start)
		if p.deps.Observer != nil {
			p.deps.Observer.Proxied(p.cfg.Name, rec.code, took)
		}
		// The path, never the query (its values may be secrets), never a token.
		ev := p.deps.Log.Debug()
		switch {
		case rec.code == http.StatusForbidden:
			// A caller can repeat it at will: counted, not logged each time.
			p.warnings.Warn(p.deps.Log, "proxy caller denied", peer.UID, func(e *zerolog.Event) *zerolog.Event {
				return e.Str("method", r.Method).Str("path", r.URL.EscapedPath())
			})
		case rec.code >= 400:
			ev = p.deps.Log.Info()
		}
		ev.Uint32("uid", peer.UID).Str("method", r.Method).Str("path", r.URL.EscapedPath()).Int("status", rec.code).
			Dur("duration", took).Msg("proxied")
	}()
	switch {
	case r.Method == http.MethodConnect:
		http.Error(rec, "tokend proxy: CONNECT is refused: this proxy forwards to "+p.upstream.Host+" only", http.StatusMethodNotAllowed)
		return
	case r.URL.IsAbs() || r.URL.Host != "":
		http.Error(rec, "tokend proxy: an absolute-form request is refused: send the path only; this proxy forwards to "+p.upstream.Host+" only", http.StatusBadRequest)
		return
	}
	tok, err := p.deps.Tokens.Token(r.Context(), server.Query{Name: p.cfg.Token, Wait: 5 * time.Second}, peer)
	if err != nil {
		var pe *proto.Error
		code := http.StatusServiceUnavailable
		if errors.As(err, &pe) && pe.Code == proto.CodeDenied {
			code = http.StatusForbidden
		}
		http.Error(rec, "tokend proxy: "+proto.Clean(err.Error()), code)
		return
	}
	if r.ContentLength > 0 && r.ContentLength <= replayMax {
		// Small enough to keep: the request can be sent again after a
		// forced refresh.
		body, err := io.ReadAll(io.LimitReader(r.Body, replayMax+1))
		if err != nil {
			http.Error(rec, "tokend proxy: reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	c := &call{peer: peer, tok: tok}
	if c.dpop() {
		// Every request its own proof, for the URL the upstream sees.
		if c.proof, err = p.proof(r, tok); err != nil {
			http.Error(rec, "tokend proxy: "+proto.Clean(err.Error()), http.StatusServiceUnavailable)
			return
		}
	}
	ctx := context.WithValue(r.Context(), callKey{}, c)
	p.rp.ServeHTTP(rec, r.WithContext(ctx))
}

// rewrite makes the upstream request: the upstream's URL under its base
// path, the caller's Authorization replaced by the token's.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(p.upstream)
	pr.Out.Header.Del("Authorization")
	pr.Out.Header.Del("DPoP")
	if c, ok := pr.In.Context().Value(callKey{}).(*call); ok {
		pr.Out.Header.Set("Authorization", authorization(c.tok))
		if c.proof != "" {
			pr.Out.Header.Set("DPoP", c.proof)
		}
	}
}

// proof is a DPoP proof for r as it will reach the upstream.
func (p *Proxy) proof(r *http.Request, tok proto.Token) (string, error) {
	if p.deps.Proof == nil {
		return "", fmt.Errorf("token %s is DPoP-bound, and this proxy cannot make proofs", tok.Name)
	}
	pr := &httputil.ProxyRequest{In: r, Out: &http.Request{URL: new(url.URL)}}
	*pr.Out.URL = *r.URL
	pr.SetURL(p.upstream)
	return p.deps.Proof(tok.Value, r.Method, pr.Out.URL.String())
}

func authorization(t proto.Token) string {
	return cmp.Or(t.Type, "Bearer") + " " + t.Value
}

// upstreamFailed answers 502 when the upstream could not be reached.
func (p *Proxy) upstreamFailed(w http.ResponseWriter, r *http.Request, err error) {
	p.deps.Log.Warn().Str("upstream", p.upstream.Host).Str("error", proto.Clean(err.Error())).Msg("upstream request failed")
	http.Error(w, fmt.Sprintf("tokend proxy: upstream %s: %s", p.upstream.Host, proto.Clean(err.Error())), http.StatusBadGateway)
}

// retry sends a request once more, with a refreshed token, when the
// upstream answered 401 invalid_token and the request can be replayed.
type retry struct {
	base http.RoundTripper
	p    *Proxy
}

func (rt *retry) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	c, ok := req.Context().Value(callKey{}).(*call)
	if !ok {
		return resp, nil
	}
	if n := resp.Header.Get("DPoP-Nonce"); n != "" && c.dpop() && rt.p.deps.Nonce != nil {
		rt.p.deps.Nonce(req.URL.String(), n)
	}
	replayable := req.Body == nil || req.GetBody != nil // a streamed body cannot be sent twice
	if resp.StatusCode != http.StatusUnauthorized || !replayable {
		return resp, nil
	}
	switch {
	case c.dpop() && authError(resp.Header, "use_dpop_nonce") && resp.Header.Get("DPoP-Nonce") != "":
		// RFC 9449 §9: the resource server wants its nonce in the proof.
		return rt.resend(req, resp, c.tok, "the upstream asked for a DPoP nonce: sending the request once more with it")
	case authError(resp.Header, "invalid_token"):
		// A forced refresh (as min='s: at most one per 30 s, shared with
		// clients), unless a newer token is there already.
		fresh, ferr := rt.p.deps.Tokens.Token(req.Context(), server.Query{Name: rt.p.cfg.Token, Rejected: c.tok.Value, Wait: 5 * time.Second}, c.peer)
		if ferr != nil || fresh.Value == c.tok.Value {
			rt.p.deps.Log.Warn().Str("upstream", rt.p.upstream.Host).Msg("upstream rejected the token (invalid_token) and no newer one came: answering its 401")
			return resp, nil
		}
		return rt.resend(req, resp, fresh, "upstream rejected the token (invalid_token): refreshed it, sending the request once more")
	}
	return resp, nil
}

// resend sends req once more with tok (and a new proof for a DPoP
// token), after discarding the first answer.
func (rt *retry) resend(req *http.Request, first *http.Response, tok proto.Token, why string) (*http.Response, error) {
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return first, nil
		}
		again.Body = body
	}
	again.Header.Set("Authorization", authorization(tok))
	if strings.EqualFold(tok.Type, "DPoP") {
		proof, err := rt.p.deps.Proof(tok.Value, req.Method, req.URL.String())
		if err != nil {
			return first, nil
		}
		again.Header.Set("DPoP", proof)
	}
	io.Copy(io.Discard, io.LimitReader(first.Body, 64<<10))
	first.Body.Close()
	rt.p.deps.Log.Info().Str("upstream", rt.p.upstream.Host).Msg(why)
	return rt.base.RoundTrip(again)
}

// authError reports whether a 401's WWW-Authenticate names the error
// code: invalid_token (RFC 6750 §3.1: the token was rejected, rather than
// missing or insufficient) or use_dpop_nonce (RFC 9449 §9).
func authError(h http.Header, code string) bool {
	for _, v := range h.Values("WWW-Authenticate") {
		if strings.Contains(v, `error="`+code+`"`) {
			return true
		}
	}
	return false
}

// recorder keeps the status answered, for the log and the metrics.
type recorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and the deadlines.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
