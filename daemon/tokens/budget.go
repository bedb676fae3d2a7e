package tokens

import (
	"fmt"
	"time"
)

// budgetWindow is the window max_fetches_per_hour counts in.
const budgetWindow = time.Hour

// budget bounds how many token requests one token makes per hour, so that
// a loop bug, a flapping endpoint or a client asking min= cannot burn an
// identity provider's quota (Auth0 counts every token it issues). The
// keeper's run loop owns it.
type budget struct {
	max    int
	sent   []time.Time // the requests in the last window, oldest first
	warned time.Time   // when exhaustion was last logged: once per window
}

// take records a request at now, or says until when none may be made.
func (b *budget) take(now time.Time) (ok bool, until time.Time) {
	cut := 0
	for cut < len(b.sent) && now.Sub(b.sent[cut]) >= budgetWindow {
		cut++
	}
	b.sent = b.sent[cut:]
	if b.max > 0 && len(b.sent) >= b.max {
		return false, b.sent[0].Add(budgetWindow)
	}
	b.sent = append(b.sent, now)
	return true, time.Time{}
}

// budgetError is a token request not made: the budget is spent.
type budgetError struct {
	max   int
	until time.Time
}

func (e *budgetError) Error() string {
	return fmt.Sprintf("issuance budget spent: %d token requests in the last hour (max_fetches_per_hour); none before %s",
		e.max, e.until.UTC().Format(time.RFC3339))
}
