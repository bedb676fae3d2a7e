package server

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket/proto"
)

// One client connection: its request lines, the answers, WATCH and
// connect-and-read.

// Buffers are reused across connections: a connection per request is the
// common case for shell clients and LoadCredential=.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, proto.MaxLine+2) }} // the longest line and its CRLF
	writers = sync.Pool{New: func() any { return bufio.NewWriter(nil) }}
)

// conn is one client connection.
type conn struct {
	s               *Server
	c               *net.UnixConn
	peer            Peer
	name            string // the token name last asked for, so asking again allocates nothing
	readBy, writeBy deadline
	dw              deadlineWriter
}

// log is the connection's logger. It is built when something is logged,
// not for every connection.
func (cn *conn) log() *zerolog.Logger {
	p := cn.peer
	l := cn.s.Log.With().Uint32("uid", p.UID).Uint32("gid", p.GID).Int32("pid", p.PID).Logger()
	return &l
}

func (s *Server) handle(ctx context.Context, c *net.UnixConn, peer Peer) {
	cn := &conn{s: s, c: c, peer: peer,
		readBy: deadline{c: c, timeout: s.IdleTimeout}, writeBy: deadline{c: c, write: true, timeout: s.IdleTimeout}}
	cn.dw.d = &cn.writeBy
	r, w := readers.Get().(*bufio.Reader), writers.Get().(*bufio.Writer)
	r.Reset(c)
	w.Reset(&cn.dw)
	defer func() {
		r.Reset(nil)
		w.Reset(nil)
		readers.Put(r)
		writers.Put(w)
	}()
	for first := true; ; first = false {
		cn.readBy.due()
		// Checked after setting the deadline: a shutdown that woke idle
		// readers just before must not be undone by it.
		if ctx.Err() != nil {
			return
		}
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(bytes.TrimRight(line, "\r\n")) > proto.MaxLine {
			peer := cn.peer
			s.warnings.Warn(s.Log, "request line too long; connection closed", peer.UID, func(e *zerolog.Event) *zerolog.Event {
				return e.Uint32("gid", peer.GID).Int32("pid", peer.PID).Int("max", proto.MaxLine)
			})
			s.count(VerbOther, proto.CodeTooLong)
			if w.Flush() == nil {
				refuse(c, (&proto.Error{Code: proto.CodeTooLong, Msg: fmt.Sprintf("request line longer than %d bytes", proto.MaxLine)}).Line())
			}
			return
		}
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			return // idle timeout, reset, or shutting down
		}
		if eof && len(line) == 0 {
			if first {
				cn.serveBare(ctx)
			}
			return
		}
		if cn.answer(ctx, w, r, bytes.TrimSuffix(line, []byte("\n"))) {
			return // the answer was a watch, which ends the connection
		}
		// A failed write (bufio flushes by itself when full) is sticky:
		// WriteByte reports it.
		if w.WriteByte('\n') != nil {
			return
		}
		// Pipelined requests already in the buffer get their answers in one write.
		if r.Buffered() == 0 || eof {
			if w.Flush() != nil {
				return
			}
		}
		if eof {
			return // a last request without a newline, then EOF
		}
	}
}

// answer writes the response line to one request line, without its
// newline. TOKEN and HEADER on a kept-alive connection allocate nothing.
// It reports whether it served a watch instead, which ends the connection.
func (cn *conn) answer(ctx context.Context, w *bufio.Writer, r *bufio.Reader, line []byte) (watched bool) {
	req, perr := proto.ParseReusing(line, &cn.name)
	if perr != nil {
		cn.log().Debug().Str("code", perr.Code).Msg("bad request")
		cn.s.count(cmp.Or(req.Verb, VerbOther), perr.Code)
		w.WriteString(perr.Line())
		return false
	}
	if req.Verb == proto.VerbWatch {
		cn.watch(ctx, w, r, req.Name)
		return true
	}
	if perr = cn.answerTo(ctx, w, req); perr != nil {
		cn.s.count(req.Verb, perr.Code)
		w.WriteString(perr.Line())
		return false
	}
	cn.s.count(req.Verb, "ok")
	return false
}

// answerTo writes the OK answer to req, or returns the error to answer.
func (cn *conn) answerTo(ctx context.Context, w *bufio.Writer, req proto.Request) *proto.Error {
	switch req.Verb {
	case proto.VerbPing:
		w.WriteString("OK PONG")
		return nil
	case proto.VerbList:
		w.WriteString("OK")
		for _, n := range cn.s.Tokens.Names(cn.peer) {
			w.WriteByte(' ')
			w.WriteString(n)
		}
		return nil
	case proto.VerbStatus:
		st, err := cn.s.Tokens.Status(req.Name, cn.peer)
		if err != nil {
			return cn.failed(req.Name, err)
		}
		w.WriteString("OK ")
		w.WriteString(st.String())
		return nil
	case proto.VerbMetrics:
		text, err := cn.s.Tokens.Metrics(cn.peer)
		if err != nil {
			return cn.failed("", err)
		}
		if len(text) == 0 || text[len(text)-1] != '\n' {
			text = append(text, '\n')
		}
		// "OK <n>", then exactly n bytes of text. Its last byte is the
		// newline the caller writes after every answer.
		fmt.Fprintf(w, "OK %d\n", len(text))
		w.Write(text[:len(text)-1])
		return nil
	case proto.VerbProof:
		proof, err := cn.s.Tokens.Proof(ctx, Query{Name: req.Name, Wait: requestWait}, req.Method, req.URL, cn.peer)
		if err != nil {
			return cn.failed(req.Name, err)
		}
		w.WriteString("OK ")
		w.WriteString(proof)
		return nil
	}
	t, err := cn.token(ctx, Query{Name: req.Name, Min: time.Duration(req.Min) * time.Second, Wait: requestWait})
	if err != nil {
		return err
	}
	w.WriteString("OK ")
	switch req.Verb {
	case proto.VerbJSON:
		w.Write(t.JSON(time.Now()))
	case proto.VerbHeader:
		w.WriteString(t.Type)
		w.WriteByte(' ')
		w.WriteString(t.Value)
	case proto.VerbInfo:
		w.WriteString(t.Info(time.Now()))
	default:
		w.WriteString(t.Value)
	}
	return nil
}

// token asks Tokens and turns any failure into a protocol error.
func (cn *conn) token(ctx context.Context, q Query) (Token, *proto.Error) {
	t, err := cn.s.Tokens.Token(ctx, q, cn.peer)
	if err != nil {
		return Token{}, cn.failed(q.Name, err)
	}
	return t, nil
}

// failed turns a failure from Tokens into a protocol error, and logs it.
func (cn *conn) failed(name string, err error) *proto.Error {
	var perr *proto.Error
	if !errors.As(err, &perr) {
		perr = &proto.Error{Code: proto.CodeUnavailable, Msg: err.Error()}
	}
	var named *NamedError
	if errors.As(err, &named) {
		name = named.Name
	}
	peer := cn.peer
	if perr.Code == proto.CodeDenied {
		cn.s.warnings.Warn(cn.s.Log, "peer denied", peer.UID, func(e *zerolog.Event) *zerolog.Event {
			return e.Uint32("gid", peer.GID).Int32("pid", peer.PID).Str("token", name).Str("addr", peer.Addr)
		})
	} else {
		cn.log().Debug().Str("token", name).Str("code", perr.Code).Msg("request failed")
	}
	return perr
}

// watch serves WATCH: the token now and at every change, ERR unavailable
// while there is none, until the client closes (or sends anything: WATCH
// is a connection's last request), the token or the peer's access to it
// goes away in a reload (a last ERR line), or the server stops. There is
// no idle timeout while watching.
func (cn *conn) watch(ctx context.Context, w *bufio.Writer, r *bufio.Reader, name string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cn.c.SetReadDeadline(time.Time{})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		// Ends on the client's EOF or data, or when the connection is
		// woken (shutdown, or below) under it.
		r.ReadByte()
		cancel()
	}()
	defer func() {
		// The reader goes back to the pool after this returns: stop
		// using it first.
		cn.c.SetReadDeadline(time.Now())
		<-closed
	}()
	counted, writeFailed := false, false
	send := func(t Token, err error) error {
		if !counted {
			counted = true
			cn.s.count(proto.VerbWatch, "ok")
		}
		if err != nil {
			w.WriteString(cn.failed(name, err).Line())
		} else {
			w.WriteString("OK ")
			w.WriteString(t.Value)
		}
		w.WriteByte('\n')
		if err := w.Flush(); err != nil {
			writeFailed = true
			return err
		}
		return nil
	}
	err := cn.s.Tokens.Watch(ctx, Query{Name: name}, cn.peer, send)
	if err == nil || writeFailed || ctx.Err() != nil {
		return
	}
	perr := cn.failed(name, err)
	if !counted {
		cn.s.count(proto.VerbWatch, perr.Code)
	}
	w.WriteString(perr.Line())
	w.WriteByte('\n')
	w.Flush()
}

// serveBare answers a client that sent nothing and closed its side: the bare
// token and EOF. A LoadCredential= peer selects the token by credential id.
// On failure it writes nothing, since an error text would become the
// credential, and says so loudly in the log instead.
func (cn *conn) serveBare(ctx context.Context) {
	peer := cn.peer
	name := ""
	unit, id, isCred := peer.Credential()
	if isCred && proto.ValidName(id) {
		name = id
	}
	t, perr := cn.token(ctx, Query{Name: name, Wait: cn.s.FirstTokenWait})
	if perr != nil && perr.Code == proto.CodeUnknown && name != "" {
		name = ""
		t, perr = cn.token(ctx, Query{Wait: cn.s.FirstTokenWait})
	}
	if perr != nil {
		cn.s.count(VerbBare, perr.Code)
		cn.s.warnings.Warn(cn.s.Log, "connect-and-read client gets nothing", peer.UID, func(e *zerolog.Event) *zerolog.Event {
			e = e.Uint32("gid", peer.GID).Int32("pid", peer.PID).Str("token", name).Str("code", perr.Code).Str("reason", proto.Clean(perr.Msg))
			if isCred {
				e = e.Str("claimed_unit", unit).Str("credential", id)
			}
			return e
		})
		return
	}
	if isCred {
		// Claimed: anyone can bind an address of that form.
		cn.log().Info().Str("claimed_unit", unit).Str("credential", id).Str("token", t.Name).Msg("token served to LoadCredential=")
	}
	cn.s.count(VerbBare, "ok")
	cn.c.SetWriteDeadline(time.Now().Add(cn.s.IdleTimeout))
	io.WriteString(cn.c, t.Value)
}
