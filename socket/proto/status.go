package proto

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// A token's state, as STATUS reports it.
const (
	StateOK          = "ok"          // servable, and the last attempt succeeded
	StateDegraded    = "degraded"    // servable, but the last attempt failed
	StateUnavailable = "unavailable" // nothing servable: no token yet, or under min_remaining
)

// Unknown is a Status duration or count nobody knows yet, written "-".
const Unknown = math.MinInt64

// Status is the answer to STATUS:
//
//	OK name=NAME state=STATE expires_in=N refresh_in=N failures=N last_success=RFC3339|- source=vault|file last_error=TEXT|-
//
// last_error comes last because it may hold spaces; it is one cleaned line.
// source (where the client credentials come from) is new in 0.2: a
// parser takes answers without it.
type Status struct {
	Name        string
	State       string
	ExpiresIn   int64 // whole seconds, or Unknown before the first token
	RefreshIn   int64 // whole seconds until the next attempt, or Unknown
	Failures    int
	LastSuccess time.Time // zero: never
	LastError   string    // "": the last attempt succeeded
	Source      string    // "vault" or "file"; "" from a tokend before 0.2
}

// String is the payload after "OK ".
func (s Status) String() string {
	success, lastErr := "-", "-"
	if !s.LastSuccess.IsZero() {
		success = s.LastSuccess.UTC().Format(time.RFC3339)
	}
	if s.LastError != "" {
		lastErr = Clean(s.LastError)
	}
	source := ""
	if s.Source != "" {
		source = "source=" + s.Source + " "
	}
	return fmt.Sprintf("name=%s state=%s expires_in=%s refresh_in=%s failures=%d last_success=%s %slast_error=%s",
		s.Name, s.State, seconds(s.ExpiresIn), seconds(s.RefreshIn), s.Failures, success, source, lastErr)
}

func seconds(n int64) string {
	if n == Unknown {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

// ParseStatus reads the payload of a STATUS answer.
func ParseStatus(payload string) (Status, error) {
	var s Status
	rest := payload
	for _, key := range []string{"name", "state", "expires_in", "refresh_in", "failures", "last_success", "source", "last_error"} {
		var val string
		if key == "source" && !strings.HasPrefix(rest, key+"=") {
			continue // an answer from before 0.2
		}
		if !strings.HasPrefix(rest, key+"=") {
			return Status{}, fmt.Errorf("STATUS answer %q: want %s= next", clip([]byte(payload)), key)
		}
		rest = rest[len(key)+1:]
		if key == "last_error" {
			val, rest = rest, ""
		} else {
			val, rest, _ = strings.Cut(rest, " ")
		}
		var err error
		switch key {
		case "name":
			s.Name = val
		case "state":
			s.State = val
		case "expires_in":
			s.ExpiresIn, err = parseSeconds(val)
		case "refresh_in":
			s.RefreshIn, err = parseSeconds(val)
		case "failures":
			s.Failures, err = strconv.Atoi(val)
		case "last_success":
			if val != "-" {
				s.LastSuccess, err = time.Parse(time.RFC3339, val)
			}
		case "source":
			s.Source = val
		case "last_error":
			if val != "-" {
				s.LastError = val
			}
		}
		if err != nil {
			return Status{}, fmt.Errorf("STATUS answer: bad %s %q", key, clip([]byte(val)))
		}
	}
	return s, nil
}

func parseSeconds(v string) (int64, error) {
	if v == "-" {
		return Unknown, nil
	}
	return strconv.ParseInt(v, 10, 64)
}
