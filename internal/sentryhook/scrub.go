package sentryhook

import (
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/getsentry/sentry-go"
)

const (
	redacted = "[redacted]"
	filtered = `"[filtered]"`
)

var (
	// quoted: Go's %q strings and backquoted ones. Errors quote object keys, bucket names,
	// prefixes and request URLs (net/http: `Head "https://…/bucket/key": …`).
	quoted = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|`[^`]*`")
	// userInfo: the password of any URL ("scheme://user:PASSWORD@").
	userInfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*:)[^\s@/]*@`)
	// kvSecret: password=…, secret=…, token=… in key=value texts and URL queries.
	kvSecret = regexp.MustCompile(`(?i)((?:ssl)?password|secret(?:_access_key)?|token|X-Amz-Signature|X-Amz-Credential|sentry_key)(\s*[=:]\s*)('[^']*'|"[^"]*"|[^\s&,;)]+)`)
	// pathLike: an unquoted token with a '/' inside (an object key, a path, a URL) and
	// emailLike: an address; a second net for keys a message did not quote.
	pathLike  = regexp.MustCompile(`[^\s"'` + "`" + `()\[\]{},;]*[^\s/"'` + "`" + `()\[\]{},;]/[^\s"'` + "`" + `()\[\]{},;]+`)
	emailLike = regexp.MustCompile(`[^\s@"'()<>\[\],;:]+@[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*\.[a-zA-Z]{2,}`)
	// pgKey: PostgreSQL's "Key (object_key)=(value)" in constraint details.
	pgKey = regexp.MustCompile(`(Key \([^)]*\)=\()[^)]*\)`)
)

// scrubber removes secrets and object keys from everything an event carries.
type scrubber struct {
	list []string // the secrets, longest first
}

func newScrubber(secrets []string) *scrubber {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if len(s) >= 4 && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range secrets {
		add(s)
		add(url.QueryEscape(s))
		add(url.PathEscape(s))
		// As a URL's user info encodes it ("//u:ENCODED@").
		ui := (&url.URL{User: url.UserPassword("u", s)}).String()
		add(strings.TrimSuffix(strings.TrimPrefix(ui, "//u:"), "@"))
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return &scrubber{list: out}
}

// text scrubs one string: the secrets (secrets), then every quoted string, unquoted
// path-like token and e-mail address (object keys are personal data).
func (s *scrubber) text(v string) string {
	v = s.secrets(v)
	v = pgKey.ReplaceAllString(v, "${1}[filtered])")
	v = quoted.ReplaceAllString(v, filtered)
	v = pathLike.ReplaceAllString(v, "[filtered]")
	v = emailLike.ReplaceAllString(v, "[filtered]")
	return v
}

// secrets replaces the configured secrets (wherever they are), URL passwords and
// key=value secrets. Fingerprints and tags get only this: they are built from scrubbed
// messages and code (function names), which the path filter would mangle.
func (s *scrubber) secrets(v string) string {
	for _, sec := range s.list {
		if strings.Contains(v, sec) {
			v = strings.ReplaceAll(v, sec, redacted)
		}
	}
	v = userInfo.ReplaceAllString(v, "${1}"+redacted+"@")
	return kvSecret.ReplaceAllString(v, "${1}${2}"+redacted)
}

// any scrubs strings inside common JSON-like values.
func (s *scrubber) any(v any) any {
	switch x := v.(type) {
	case string:
		return s.text(x)
	case map[string]any:
		for k, e := range x {
			x[k] = s.any(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = s.any(e)
		}
		return x
	case []string:
		for i, e := range x {
			x[i] = s.text(e)
		}
		return x
	}
	return v
}

// event scrubs every free-text field of an event (BeforeSend).
func (s *scrubber) event(e *sentry.Event) *sentry.Event {
	if e == nil {
		return nil
	}
	e.Message = s.text(e.Message)
	for i := range e.Exception {
		e.Exception[i].Value = s.text(e.Exception[i].Value)
		if st := e.Exception[i].Stacktrace; st != nil {
			for j := range st.Frames {
				st.Frames[j].Vars = nil
			}
		}
	}
	for _, b := range e.Breadcrumbs {
		b.Message = s.text(b.Message)
		for k, v := range b.Data {
			b.Data[k] = s.any(v)
		}
	}
	for k, c := range e.Contexts {
		for ck, cv := range c {
			c[ck] = s.any(cv)
		}
		e.Contexts[k] = c
	}
	for i, f := range e.Fingerprint {
		e.Fingerprint[i] = s.secrets(f)
	}
	for k, v := range e.Tags {
		e.Tags[k] = s.secrets(v)
	}
	for i := range e.Threads {
		if st := e.Threads[i].Stacktrace; st != nil {
			for j := range st.Frames {
				st.Frames[j].Vars = nil
			}
		}
	}
	e.Request = nil
	e.User = sentry.User{}
	return e
}
