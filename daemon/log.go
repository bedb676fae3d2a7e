package daemon

import (
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/journald"
)

// LogWriter is where tokend logs, with a level that a reload can change
// without rebuilding every component's logger.
type LogWriter struct {
	out   io.Writer
	level atomic.Int32
}

// NewLogWriter picks the output for stderr: journald's native protocol when
// stderr is the journal (priorities and fields survive), human-readable on
// a terminal, JSON lines otherwise.
func NewLogWriter(stderr *os.File) *LogWriter {
	var out io.Writer = stderr
	if ok, _ := journal.StderrIsJournalStream(); ok && journal.Enabled() {
		out = journald.NewJournalDWriter()
	} else if fi, err := stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		out = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.RFC3339}
	}
	return NewLogWriterTo(out)
}

// NewLogWriterTo logs JSON (or whatever out makes of it) to out.
func NewLogWriterTo(out io.Writer) *LogWriter {
	w := &LogWriter{out: out}
	w.SetLevel(zerolog.InfoLevel)
	return w
}

// SetLevel changes the level of every logger made by Logger.
func (w *LogWriter) SetLevel(l zerolog.Level) { w.level.Store(int32(l)) }

// Logger returns a logger writing to w.
func (w *LogWriter) Logger() zerolog.Logger {
	return zerolog.New(w).With().Timestamp().Logger()
}

func (w *LogWriter) Write(p []byte) (int, error) { return w.out.Write(p) }

// WriteLevel implements zerolog.LevelWriter; below the level is dropped.
func (w *LogWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if l < zerolog.Level(w.level.Load()) {
		return len(p), nil
	}
	if lw, ok := w.out.(zerolog.LevelWriter); ok {
		return lw.WriteLevel(l, p)
	}
	return w.out.Write(p)
}
