package tokens

// The result label of tokend_token_fetches_total.
const (
	fetchSuccess     = "success"
	fetchRejected    = "rejected"         // 401 or invalid_client
	fetchRateLimited = "rate_limited"     // 429
	fetchError       = "error"            // anything else
	FetchBudget      = "budget_exhausted" // not sent: max_fetches_per_hour reached
)

// FetchResults are the results of token requests, for the metrics.
var FetchResults = []string{fetchSuccess, fetchRejected, fetchRateLimited, fetchError, FetchBudget}
