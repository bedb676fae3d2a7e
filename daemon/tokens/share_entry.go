package tokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/oauth"
	"github.com/tokend/tokend/socket/proto"
)

// The shared entry: a KV v2 secret in Vault that the hosts sharing a
// token read and write with check-and-set, and its fields.

// vet treats the entry as the untrusted input it is: a token that could
// not come from a token endpoint (not one printable word, too long, a
// type that is not one word, fetched in the future) is no token; the
// lifetime it claims is capped at the longest this host has been given
// (maxSharedLifetime before it has been given any), so that a host
// refreshes on its own schedule at the latest; the scope served is this
// host's own (the fingerprint says they are equal); the texts shown in
// STATUS and the log are cleaned.
func (s *sharer) vet(now time.Time, e shared) shared {
	e.LeaseHolder = proto.CleanN(e.LeaseHolder, 200)
	e.LastError = proto.Clean(e.LastError)
	if e.Token == "" {
		return e
	}
	why := ""
	switch {
	case len(e.Token) > maxTokenLen || !oauth.IsTokenText(e.Token):
		why = "its access_token is not one printable word"
	case !oauth.IsTokenText(e.Type):
		why = "its token_type is not one printable word"
	case e.FetchedAt.After(now.Add(clockSkew)):
		why = "its fetched_at is in the future"
	}
	if why != "" {
		s.log.Warn().Str("problem", why).Str("fetched_by", proto.CleanN(e.FetchedBy, 200)).Msg("the shared entry holds no usable token; ignoring it")
		e.Token, e.Type, e.FetchedAt, e.ExpiresAt = "", "", time.Time{}, time.Time{}
		return e
	}
	e.Scope = s.scope
	limit := s.longest
	if limit == 0 {
		limit = maxSharedLifetime
	}
	if e.lifetime() > limit {
		e.ExpiresAt = e.FetchedAt.Add(limit)
	}
	return e
}

// gave records a token the endpoint gave this host, whose lifetime bounds
// what the entry may claim.
func (s *sharer) gave(lifetime time.Duration) { s.longest = max(s.longest, lifetime) }

// EntryStore is a KV v2 store with check-and-set writes: Vault.
type EntryStore interface {
	ReadEntry(ctx context.Context, mount, path string) (map[string]string, int, error)
	WriteEntry(ctx context.Context, mount, path string, fields map[string]string, cas int) (int, error)
}

// shared is the shared entry. A zero Token is an entry with no token.
type shared struct {
	Token, Type, Scope   string
	FetchedAt, ExpiresAt time.Time
	FetchedBy            string
	Config               string // the fingerprint of the configuration the token is for
	LeaseHolder          string
	LeaseUntil           time.Time
	// Failures counts the lease holders' failed token requests in a row;
	// while it is not 0, the lease is the fleet's backoff, and LastError
	// says what the endpoint answered.
	Failures  int
	LastError string
}

// fields is the entry as stored.
func (s shared) fields() map[string]string {
	f := map[string]string{"access_token": s.Token, "token_type": s.Type, "scope": s.Scope,
		"fetched_by": s.FetchedBy, "config": s.Config, "lease_holder": s.LeaseHolder,
		"failures": strconv.Itoa(s.Failures), "last_error": s.LastError}
	for k, t := range map[string]time.Time{"fetched_at": s.FetchedAt, "expires_at": s.ExpiresAt, "lease_until": s.LeaseUntil} {
		f[k] = ""
		if !t.IsZero() {
			f[k] = t.UTC().Format(time.RFC3339Nano)
		}
	}
	return f
}

// parseShared reads an entry. A token whose times do not parse is no
// token: never served on a guess.
func parseShared(f map[string]string) shared {
	when := func(k string) time.Time {
		t, err := time.Parse(time.RFC3339Nano, f[k])
		if err != nil {
			return time.Time{}
		}
		return t
	}
	s := shared{Token: f["access_token"], Type: f["token_type"], Scope: f["scope"], FetchedBy: f["fetched_by"],
		Config: f["config"], LeaseHolder: f["lease_holder"], FetchedAt: when("fetched_at"), ExpiresAt: when("expires_at"),
		LeaseUntil: when("lease_until"), LastError: f["last_error"]}
	s.Failures, _ = strconv.Atoi(f["failures"])
	if s.Token == "" || s.Type == "" || s.FetchedAt.IsZero() || !s.ExpiresAt.After(s.FetchedAt) {
		s.Token, s.Type, s.FetchedAt, s.ExpiresAt = "", "", time.Time{}, time.Time{}
	}
	return s
}

func (s shared) lifetime() time.Duration { return s.ExpiresAt.Sub(s.FetchedAt) }

// shareConfig is the fingerprint of what a token is for: hosts whose
// configurations differ must not serve each other's tokens.
func shareConfig(f *config.Fetch) string {
	h := sha256.New()
	for _, s := range []string{f.TokenURL, f.Issuer, f.Scope, f.Params, f.Secret.String()} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// ShareID names this tokend process in lease_holder and fetched_by.
func ShareID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return host + "/" + hex.EncodeToString(b[:])
}
