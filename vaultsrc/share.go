package vaultsrc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"
)

// ErrConflict is a check-and-set write that lost: the entry has a newer
// version than the one the writer read.
var ErrConflict = errors.New("check-and-set conflict: the entry changed since it was read")

// ReadEntry reads a KV v2 entry's string fields and its current version.
// An entry that does not exist reads as empty with version 0; a deleted
// one as empty with its version, so that a check-and-set write can
// replace either.
func (s *Source) ReadEntry(ctx context.Context, mount, path string) (map[string]string, int, error) {
	var version int
	data, err := s.call(ctx, mount+"/"+path, func() (map[string]any, error) {
		kv, err := s.client.KVv2(mount).Get(ctx, path)
		if errors.Is(err, api.ErrSecretNotFound) {
			version = 0
			return map[string]any{}, nil
		}
		if err != nil {
			return nil, err
		}
		if kv.VersionMetadata != nil {
			version = kv.VersionMetadata.Version
		}
		if kv.Data == nil {
			return map[string]any{}, nil
		}
		return kv.Data, nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s/%s (kv v2): %w", mount, path, compact(err))
	}
	fields := make(map[string]string, len(data))
	for k, v := range data {
		if str, ok := v.(string); ok {
			fields[k] = str
		}
	}
	return fields, version, nil
}

// WriteEntry writes fields as the next version of a KV v2 entry, if its
// current version is still cas (0: it must not exist yet), and returns
// the new version. A lost race is ErrConflict.
func (s *Source) WriteEntry(ctx context.Context, mount, path string, fields map[string]string, cas int) (int, error) {
	data := make(map[string]any, len(fields))
	for k, v := range fields {
		data[k] = v
	}
	var version int
	_, err := s.call(ctx, mount+"/"+path, func() (map[string]any, error) {
		kv, err := s.client.KVv2(mount).Put(ctx, path, data, api.WithCheckAndSet(cas))
		if err != nil {
			return nil, err
		}
		if kv.VersionMetadata != nil {
			version = kv.VersionMetadata.Version
		}
		return map[string]any{}, nil
	})
	if isConflict(err) {
		return 0, fmt.Errorf("writing %s/%s: %w", mount, path, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("writing %s/%s (kv v2): %w", mount, path, compact(err))
	}
	return version, nil
}

// isConflict recognises KV v2's answer to a stale cas: 400 "check-and-set
// parameter did not match the current version".
func isConflict(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "check-and-set") {
			return true
		}
	}
	return false
}
