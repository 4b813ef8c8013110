// Package text holds the string helpers that callhook's packages share.
package text

import "unicode/utf8"

// Cut returns s cut to at most limit bytes at a rune boundary, and whether
// it cut anything. Callers add their own ellipsis.
func Cut(s string, limit int) (string, bool) {
	if len(s) <= limit {
		return s, false
	}
	cut := max(limit, 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut], true
}
