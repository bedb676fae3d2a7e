package proto

import "strings"

// MaxText caps text from elsewhere (a Vault error, a token endpoint's
// answer, a TLS error naming a certificate) wherever tokend repeats it.
const MaxText = 300

// Clean makes text that tokend did not write safe to repeat on one line:
// in an ERR answer, in systemd's STATUS=, in a log message. Control bytes
// (CR, LF, NUL, ESC…) and bytes outside printable ASCII become \xNN, so a
// server cannot end a line early, inject an sd_notify assignment such as
// READY=1, or drive an operator's terminal; the result is capped at
// MaxText bytes. Every text from upstream passes through it.
func Clean(s string) string { return CleanN(s, MaxText) }

// CleanN is Clean with another cap (at least 3 bytes).
func CleanN(s string, max int) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if b.Len() >= max {
			return b.String()[:max-3] + "..."
		}
		c := s[i]
		if c >= ' ' && c <= '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteString(`\x`)
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	if b.Len() > max {
		return b.String()[:max-3] + "..."
	}
	return b.String()
}
