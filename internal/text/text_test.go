package text

import "testing"

func TestCut(t *testing.T) {
	for _, tt := range []struct {
		s     string
		limit int
		want  string
		cut   bool
	}{
		{"abc", 3, "abc", false},
		{"abcd", 3, "abc", true},
		{"aé", 2, "a", true}, // é is two bytes: never split it
		{"ééé", 5, "éé", true},
		{"x", 0, "", true},
	} {
		if got, cut := Cut(tt.s, tt.limit); got != tt.want || cut != tt.cut {
			t.Errorf("Cut(%q, %d) = %q, %v; want %q, %v", tt.s, tt.limit, got, cut, tt.want, tt.cut)
		}
	}
}
