package config

import (
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// mask replaces every hidden part of a connection string or endpoint.
const mask = "xxxxx"

// kvPassword finds the value of password= (and sslpassword=) in libpq key=value strings
// and URL queries: a quoted value up to its closing quote (backslash escapes honoured;
// unterminated: to the end), otherwise up to the next white space. Over-hiding a URL
// query's next parameters is fine; showing part of a password is not.
var kvPassword = regexp.MustCompile(`(?is)password\s*=\s*('(?:[^'\\]|\\.|\\$)*'?|\S*)`)

// RedactURL hides the password of a database URL for logs and errors, for any input,
// parseable or not:
//   - URL form: everything between the first "://" and the LAST "@" is hidden, except a
//     plain user name before the first ':' ("postgres://u:xxxxx@host/db"), so a password
//     with spaces, '@', ':' or '/' is hidden whole;
//   - key=value form and URL queries: the value of every password= and sslpassword=.
//
// It also serves error texts that quote a connection string.
func RedactURL(s string) string {
	var hide [][2]int
	if start, at, ok := userinfo(s); ok {
		info := s[start:at]
		user, _, hasPassword := strings.Cut(info, ":")
		switch {
		case !plainUser(user):
			// Not a plain user name: the boundaries are unclear, hide it all.
		case hasPassword:
			start += len(user) + 1 // keep "u:"
		default:
			start = at // "postgres://bob@host": a user name alone, no password
		}
		hide = append(hide, [2]int{start, at})
	}
	return redact(s, append(hide, kvRanges(s)...))
}

// RedactEndpoint hides the whole user info of an endpoint URL (R2_ENDPOINT): everything
// between "://" and the last "@", or, without "://", everything before the last "@".
func RedactEndpoint(s string) string {
	if start, at, ok := userinfo(s); ok {
		return redact(s, [][2]int{{start, at}})
	}
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		return redact(s, [][2]int{{0, at}})
	}
	return s
}

// redactUnparsed is the strictest form, for a DATABASE_URL that does not parse (its
// boundaries are anyone's guess): password= values are hidden, and so is everything
// before the last "@" (but a postgres:// or postgresql:// scheme).
func redactUnparsed(s string) string {
	hide := kvRanges(s)
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		start := 0
		for _, scheme := range []string{"postgresql://", "postgres://"} {
			if strings.HasPrefix(s, scheme) {
				start = len(scheme)
				break
			}
		}
		hide = append(hide, [2]int{start, at})
	}
	return redact(s, hide)
}

// plainUser reports whether u can be shown as a user name: nothing that would make
// the URL's boundaries ambiguous (a password in a query, a path, spaces).
func plainUser(u string) bool {
	return !strings.ContainsFunc(u, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(`/?#@&=%'"\`, r) || unicode.IsSpace(r)
	})
}

// userinfo returns the span between the first "://" and the last "@" after it.
func userinfo(s string) (start, at int, ok bool) {
	i := strings.Index(s, "://")
	if i < 0 {
		return 0, 0, false
	}
	start = i + len("://")
	at = strings.LastIndexByte(s, '@')
	if at < start {
		return 0, 0, false
	}
	return start, at, true
}

func kvRanges(s string) [][2]int {
	var out [][2]int
	for _, m := range kvPassword.FindAllStringSubmatchIndex(s, -1) {
		out = append(out, [2]int{m[2], m[3]})
	}
	return out
}

// redact replaces the union of the spans with one mask each.
func redact(s string, spans [][2]int) string {
	spans = slices.DeleteFunc(spans, func(sp [2]int) bool { return sp[0] >= sp[1] })
	if len(spans) == 0 {
		return s
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	var b strings.Builder
	pos := 0
	for i := 0; i < len(spans); {
		// Merged spans end before the next one starts, so lo >= pos.
		lo, hi := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= hi; i++ {
			hi = max(hi, spans[i][1])
		}
		b.WriteString(s[pos:lo])
		b.WriteString(mask)
		pos = hi
	}
	b.WriteString(s[pos:])
	return b.String()
}
