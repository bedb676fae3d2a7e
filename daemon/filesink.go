package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/server"
)

// sinkFile keeps f in step with the token called name until ctx ends:
// written atomically with every new token, removed while there is none
// that may be served (a reader must fail, not send an expired token), and
// removed at the end.
func (d *daemon) sinkFile(ctx context.Context, name string, f config.FileSink) {
	log := d.log.With().Str("token", name).Str("file", f.Path).Logger()
	defer removeSink(f, log, "stopped")
	d.follow(ctx, name, nil, func(t server.Token, unavailable error) error {
		if unavailable != nil {
			removeSink(f, log, "token unavailable")
			return nil
		}
		if err := writeSink(f, sinkContent(f.Format, t, time.Now())); err != nil {
			log.Error().Err(err).Msg("writing the token file failed; readers get the previous one until it is removed")
			return nil
		}
		log.Debug().Time("expires_at", t.ExpiresAt.UTC()).Msg("token file written")
		return nil
	})
}

func sinkContent(format string, t server.Token, now time.Time) []byte {
	switch format {
	case "header":
		return []byte("Authorization: " + t.Type + " " + t.Value + "\n")
	case "json":
		return append(t.JSON(now), '\n')
	}
	return []byte(t.Value) // as LoadCredential= gets it: no newline
}

// writeSink replaces f.Path with data: a temporary file in the same
// directory gets its final mode and owner, is synced, then renamed over
// the old one, so a reader sees the old file or the new one, whole.
func writeSink(f config.FileSink, data []byte) (err error) {
	dir := filepath.Dir(f.Path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(f.Mode); err != nil {
		return err
	}
	if f.UID >= 0 || f.GID >= 0 {
		if err := tmp.Chown(f.UID, f.GID); err != nil {
			return fmt.Errorf("file_owner/file_group: %w", err)
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}

func removeSink(f config.FileSink, log zerolog.Logger, why string) {
	err := os.Remove(f.Path)
	switch {
	case err == nil:
		log.Info().Str("reason", why).Msg("token file removed")
	case !os.IsNotExist(err):
		log.Error().Err(err).Str("reason", why).Msg("removing the token file failed")
	}
}
