package tokens

import "time"

// Observer is told what a keeper and its sharer do: the metrics count it,
// the supervisor reports it. It is the one way out of a keeper besides
// its readers.
type Observer interface {
	// Attempted follows every attempt at a token, whatever its outcome.
	Attempted()
	// Fetched follows every token endpoint request: its result (the
	// fetchResults) and how long it took.
	Fetched(result string, took time.Duration)
	// ShareRead follows every read of the shared entry (shareResults).
	ShareRead(result string)
	// ShareLeased follows a lease this host took: one token request.
	ShareLeased()
	// FellBack follows a token request this host made alone because
	// sharing failed.
	FellBack()
}

// nobody observes nothing.
type nobody struct{}

func (nobody) Attempted()                    {}
func (nobody) Fetched(string, time.Duration) {}
func (nobody) ShareRead(string)              {}
func (nobody) ShareLeased()                  {}
func (nobody) FellBack()                     {}
