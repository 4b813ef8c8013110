package mapping

import (
	"fmt"
	"strings"
	"time"

	"github.com/expr-lang/expr"
)

// functions are callhook's additions to expr's built-ins (SPEC §4).
var functions = []expr.Option{
	expr.Function("format_date", formatDate, new(func(time.Time, string) string)),
	expr.Function("digits", func(p ...any) (any, error) { return Digits(p[0].(string)), nil }, new(func(string) string)),
	expr.Function("e164", func(p ...any) (any, error) { return E164(p[0].(string), p[1].(string)) }, new(func(string, string) string)),
}

// formatDate takes a preset name or a Go layout, like date_format.
func formatDate(p ...any) (any, error) {
	t, ok := p[0].(time.Time)
	if !ok {
		return nil, fmt.Errorf("format_date: first argument is %T, not a time", p[0])
	}
	f, err := ParseDateFormat(p[1].(string))
	if err != nil {
		return nil, fmt.Errorf("format_date: %w", err)
	}
	return fmt.Sprint(f.Format(t, t.Location())), nil
}

// Digits keeps only the ASCII digits of s: "+38 (044) 123-45-67" -> "380441234567".
func Digits(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= '0' && c <= '9' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// E164 normalises a phone number to E.164 ("+380441234567"). Numbers written
// with "+" or the "00" international prefix keep their country code; national
// numbers get the calling code of defaultCountry (ISO 3166 alpha-2, e.g. "UA")
// after their trunk prefix ("0", or "8" in the former USSR countries) is
// dropped. Short or empty input is an error rather than a wrong number.
func E164(s, defaultCountry string) (string, error) {
	d := Digits(s)
	trimmed := strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(trimmed, "+"):
	case strings.HasPrefix(d, "00"):
		d = d[2:]
	default:
		cc, ok := callingCodes[strings.ToUpper(defaultCountry)]
		if !ok {
			return "", fmt.Errorf("e164: unknown country %q: use an ISO 3166 alpha-2 code such as \"UA\" or \"US\"", defaultCountry)
		}
		switch {
		case strings.HasPrefix(d, cc) && len(d) > nationalMax(cc):
			// already international, written without "+"
		case cc == "1":
			d = cc + d
		default:
			d = cc + strings.TrimLeft(trunkTrim(d, cc), "0")
		}
	}
	if len(d) < 7 || len(d) > 15 {
		return "", fmt.Errorf("e164: %q is not a phone number (%s after normalising; E.164 allows 7 to 15)", s, countDigits(len(d)))
	}
	return "+" + d, nil
}

func countDigits(n int) string {
	if n == 1 {
		return "1 digit"
	}
	return fmt.Sprintf("%d digits", n)
}

// trunkTrim drops the "8" trunk prefix used in Russia and Kazakhstan
// (calling code 7) before an area code.
func trunkTrim(d, cc string) string {
	if cc == "7" && len(d) == 11 && d[0] == '8' {
		return d[1:]
	}
	return d
}

// nationalMax is the longest national significant number we expect, so that
// "380441234567" (already with its country code) is not prefixed twice.
func nationalMax(cc string) int {
	switch cc {
	case "7":
		return 10
	case "49":
		return 11
	}
	return 9
}

// callingCodes maps ISO 3166 alpha-2 codes to ITU calling codes for the
// countries our users' PBXs are most often in.
var callingCodes = map[string]string{
	"US": "1", "CA": "1", "RU": "7", "KZ": "7", "EG": "20", "ZA": "27", "GR": "30", "NL": "31",
	"BE": "32", "FR": "33", "ES": "34", "HU": "36", "IT": "39", "RO": "40", "CH": "41", "AT": "43",
	"GB": "44", "UK": "44", "DK": "45", "SE": "46", "NO": "47", "PL": "48", "DE": "49", "MX": "52",
	"AR": "54", "BR": "55", "CL": "56", "CO": "57", "MY": "60", "AU": "61", "ID": "62", "PH": "63",
	"NZ": "64", "SG": "65", "TH": "66", "JP": "81", "KR": "82", "VN": "84", "CN": "86", "TR": "90",
	"IN": "91", "PK": "92", "IR": "98", "MA": "212", "NG": "234", "KE": "254", "PT": "351",
	"LU": "352", "IE": "353", "FI": "358", "BG": "359", "LT": "370", "LV": "371", "EE": "372",
	"MD": "373", "AM": "374", "BY": "375", "UA": "380", "RS": "381", "HR": "385", "SI": "386",
	"CZ": "420", "SK": "421", "IL": "972", "AE": "971", "SA": "966", "GE": "995", "AZ": "994",
	"UZ": "998", "KG": "996",
}
