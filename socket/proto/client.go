package proto

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultPath is where tokend listens unless configured otherwise.
const DefaultPath = "/run/tokend/tokend.sock"

// Client sends requests to a tokend socket, one connection per call.
type Client struct {
	Path    string
	Timeout time.Duration // whole call; default 15s (the daemon may wait for a first token)
}

// Do sends one request line and returns the text after "OK" (without the
// separating space). An "ERR" answer is returned as *Error.
//
// Every request is idempotent, so when the connection dies before an
// answer (a reset, an EOF: the daemon was killed or restarted after it
// accepted the connection), Do asks once more on a new connection. Under
// socket activation that one reaches the next daemon, and nothing is lost.
func (c Client) Do(ctx context.Context, request string) (string, error) {
	line, _, err := c.call(ctx, request, false)
	return line, err
}

// Metrics asks METRICS and returns the Prometheus text exposition that
// follows the "OK <n>" line.
func (c Client) Metrics(ctx context.Context) ([]byte, error) {
	_, body, err := c.call(ctx, string(VerbMetrics), true)
	return body, err
}

// call makes the round trip, asking once more when the connection died
// before the answer, and reads a counted body after the line if asked to.
func (c Client) call(ctx context.Context, request string, counted bool) (string, []byte, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	line, body, err := c.roundTrip(ctx, request, counted)
	if errors.Is(err, errDied) {
		line, body, err = c.roundTrip(ctx, request, counted)
	}
	return line, body, err
}

// errDied marks a connection that ended before its answer.
var errDied = errors.New("connection ended before the answer")

// maxBody bounds a counted answer (METRICS) a client accepts.
const maxBody = 64 << 20

func (c Client) roundTrip(ctx context.Context, request string, counted bool) (string, []byte, error) {
	conn, err := dial(ctx, c.Path)
	if err != nil {
		return "", nil, fmt.Errorf("connecting to tokend at %q: %w", c.Path, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte(request + "\n")); err != nil {
		return "", nil, fmt.Errorf("sending to tokend at %q: %w", c.Path, died(err))
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	raw, err := r.ReadString('\n')
	if err != nil {
		return "", nil, fmt.Errorf("reading from tokend at %q: %w", c.Path, died(err))
	}
	line, err := ParseResponse(strings.TrimRight(raw, "\r\n"))
	if err != nil || !counted {
		return line, nil, err
	}
	n, err := strconv.Atoi(line)
	if err != nil || n < 0 || n > maxBody {
		return "", nil, fmt.Errorf("tokend at %q: want a byte count after OK, got %q", c.Path, clip([]byte(line)))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return "", nil, fmt.Errorf("reading %d bytes from tokend at %q: %w", n, c.Path, err)
	}
	return line, body, nil
}

// died adds errDied to the errors of a connection the server dropped.
func died(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w (%w)", err, errDied)
	}
	return err
}

// ParseResponse splits a response line into its OK payload or an *Error.
func ParseResponse(line string) (string, error) {
	switch {
	case line == "OK":
		return "", nil
	case strings.HasPrefix(line, "OK "):
		return line[3:], nil
	case strings.HasPrefix(line, "ERR "):
		code, msg, _ := strings.Cut(line[4:], " ")
		return "", &Error{Code: code, Msg: msg}
	}
	return "", fmt.Errorf("unexpected answer from tokend: %q", clip([]byte(line)))
}

// Watch sends WATCH [name] and calls each with every token the daemon
// sends, or with the *Error of an "ERR unavailable" line while there is
// none, until ctx ends (nil), each fails (its error) or the daemon ends
// the watch with another error (that *Error: the token or the caller's
// access to it is gone). When the connection drops (tokend restarted) it
// connects again, after a second, and carries on; Timeout bounds each
// connection attempt, not the watch.
func (c Client) Watch(ctx context.Context, name string, each func(token string, err error) error) error {
	req := Request{Verb: VerbWatch, Name: name}.String()
	for first := true; ; first = false {
		err := c.watchOnce(ctx, req, each)
		var cerr callbackError
		var perr *Error
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &cerr):
			return cerr.err
		case errors.As(err, &perr):
			return perr
		case first && !errors.Is(err, errDied):
			return err // never reached it: say so rather than wait
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// callbackError is an error from Watch's callback, passed through.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

func (c Client) watchOnce(ctx context.Context, req string, each func(string, error) error) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	conn, err := dial(dctx, c.Path)
	cancel()
	if err != nil {
		return fmt.Errorf("connecting to tokend at %q: %w", c.Path, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := conn.Write([]byte(req + "\n")); err != nil {
		return fmt.Errorf("sending to tokend at %q: %w", c.Path, died(err))
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		raw, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("watching tokend at %q: %w", c.Path, died(err))
		}
		tok, err := ParseResponse(strings.TrimRight(raw, "\r\n"))
		var perr *Error
		if errors.As(err, &perr) && perr.Code != CodeUnavailable {
			return perr // the daemon ended the watch
		}
		if err != nil && perr == nil {
			return err
		}
		if cerr := each(tok, err); cerr != nil {
			return callbackError{cerr}
		}
	}
}

// dial connects to the socket at path. A full listen backlog (EAGAIN: a
// flood of connections from someone, or a burst) is tried again, for up
// to two seconds within ctx: the kernel says to, and tokend accepts
// quickly even while it refuses others.
func dial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	wait := time.Millisecond
	giveUp := time.Now().Add(2 * time.Second)
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Now().After(giveUp) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}
