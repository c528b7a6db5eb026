package config

import (
	"errors"
	"runtime/debug"
	"strings"
	"testing"
)

func TestSentryConfigOffByDefault(t *testing.T) {
	t.Parallel()
	c, err := Load(MapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.SentryDSN != "" || c.SentryEnvironment != "" {
		t.Errorf("Sentry on by default: %q %q", c.SentryDSN, c.SentryEnvironment)
	}
	c, err = Load(MapEnv(map[string]string{"SENTRY_DSN": "  ", "SENTRY_ENVIRONMENT": ""}))
	if err != nil || c.SentryDSN != "" {
		t.Errorf("empty SENTRY_DSN: %q, %v", c.SentryDSN, err)
	}
}

func TestSentryConfigValues(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"https://abc123@o42.ingest.sentry.io/4505",
		"http://public:legacysecret@127.0.0.1:9000/7",
		"https://k@sentry.example.com/sub/path/12",
	} {
		c, err := Load(MapEnv(map[string]string{"SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "production"}))
		if err != nil {
			t.Errorf("%s: %v", dsn, err)
			continue
		}
		if c.SentryDSN != dsn || c.SentryEnvironment != "production" {
			t.Errorf("%s: got %q %q", dsn, c.SentryDSN, c.SentryEnvironment)
		}
	}
}

// TestSentryConfigBadDSN: a bad DSN is one *Error naming SENTRY_DSN, and neither the
// public nor the secret key shows in it.
func TestSentryConfigBadDSN(t *testing.T) {
	t.Parallel()
	const pub, sec = "PUBKEY0123456789abcdef", "SECRETKEYfedcba9876"
	for _, dsn := range []string{
		"ftp://" + pub + "@o1.ingest.sentry.io/1",                // scheme
		"https://o1.ingest.sentry.io/1",                          // no key
		"https://" + pub + "@/1",                                 // no host
		"https://" + pub + "@o1.ingest.sentry.io",                // no project
		"https://" + pub + "@o1.ingest.sentry.io/",               // no project
		"https://" + pub + ":" + sec + "@host:port/1",            // port
		"https://" + pub + ":" + sec + "@host/path/",             // no project
		"https://" + pub + ":" + sec + "@ho st/%zz",              // does not parse
		"https://" + pub + ":" + sec + "@host\x7f/1",             // does not parse
		pub + ":" + sec + "@o1.ingest.sentry.io/1",               // no scheme
		"https://" + pub + ":" + sec + "@[::1/1",                 // does not parse
		"https://" + pub + ":" + sec + "@" + pub + sec + ":x/1",  // key-like host
		"https://" + pub + "%zz:" + sec + "@o1.ingest.sentry.io", // bad escape
	} {
		_, err := Load(MapEnv(map[string]string{"SENTRY_DSN": dsn}))
		if err == nil {
			t.Errorf("%q accepted", dsn)
			continue
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.Var != "SENTRY_DSN" || strings.Count(err.Error(), "\n") != 0 {
			t.Errorf("%q: want one error naming SENTRY_DSN, got %v", dsn, err)
		}
		for _, secret := range []string{pub, sec, pub[:8], sec[:8]} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%q: error shows a key: %v", dsn, err)
			}
		}
	}
}

func TestSentryConfigBadEnvironment(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"prod/eu", "two words", strings.Repeat("e", 65), "None", "a\x01b"} {
		_, err := Load(MapEnv(map[string]string{"SENTRY_ENVIRONMENT": v}))
		var ce *Error
		if !errors.As(err, &ce) || ce.Var != "SENTRY_ENVIRONMENT" {
			t.Errorf("%q: want an error naming SENTRY_ENVIRONMENT, got %v", v, err)
		}
	}
}

// TestRedactSentryDSN: a DSN's keys are its user info, hidden by RedactEndpoint.
func TestRedactSentryDSN(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://abc@o1.ingest.sentry.io/42":     "https://xxxxx@o1.ingest.sentry.io/42",
		"https://abc:def@host/42":                "https://xxxxx@host/42",
		"https://a@b@host/42":                    "https://xxxxx@host/42",
		"abc:def@host/42":                        "xxxxx@host/42",
		"https://o1.ingest.sentry.io/42":         "https://o1.ingest.sentry.io/42",
		"https://key@o1.ingest.sentry.io/42?x=@": "https://xxxxx@",
	} {
		if got := RedactEndpoint(in); got != want {
			t.Errorf("RedactEndpoint(%q) = %q, want %q", in, got, want)
		}
	}
	if p, s := SentryKeys("https://pub:sec@host/1"); p != "pub" || s != "sec" {
		t.Errorf("SentryKeys = %q %q", p, s)
	}
}

func TestSentryRelease(t *testing.T) {
	t.Parallel()
	if r := SentryRelease(); !strings.HasPrefix(r, "bg-worker@") || len(r) <= len("bg-worker@") {
		t.Errorf("SentryRelease() = %q", r)
	}
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: rev}, true, "v1.2.3"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, true, "0123456789ab-dirty"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "devel"},
		{nil, false, "devel"},
	} {
		if got := buildVersion(tc.info, tc.ok); got != tc.want {
			t.Errorf("buildVersion = %q, want %q", got, tc.want)
		}
	}
}

// FuzzSentryDSN: for any SENTRY_DSN, Load either accepts it as it is or reports
// SENTRY_DSN without its keys — the user info, everything between "://" (or the start)
// and the last "@" — whole or in part (8+ characters that show nowhere else).
func FuzzSentryDSN(f *testing.F) {
	for _, s := range [][3]string{
		{"https://", "PUBLICKEY123", "@o1.ingest.sentry.io/1"},
		{"http://", "pub:SECRET456", "@127.0.0.1:9/2"},
		{"", "KEYKEYKEYKEY", "@host/3"},
		{"https://", "k%zzKEYKEYKEY", "@host"},
		{"https://", "KEY KEY KEY", "@ho st/"},
		{"ftp://", "KEYKEYKEYKEY", "@host/1"},
		{"https://", "KEYKEY:KEYKEY", "@host:port/1"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, pre, key, post string) {
		dsn := pre + key + post
		_, err := Load(MapEnv(map[string]string{"SENTRY_DSN": dsn}))
		if err == nil {
			return
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.Var != "SENTRY_DSN" {
			t.Fatalf("error does not name SENTRY_DSN: %v", err)
		}
		v := strings.TrimSpace(dsn)
		start := 0
		if i := strings.Index(v, "://"); i >= 0 {
			start = i + 3
		}
		at := strings.LastIndexByte(v, '@')
		if at < start {
			return // no user info: nothing secret
		}
		secret, rest := v[start:at], v[:start]+v[at:]
		msg := err.Error()
		for i := 0; i+8 <= len(secret); i++ {
			piece := secret[i : i+8]
			if strings.Contains(msg, piece) && !strings.Contains(rest, piece) &&
				!strings.Contains(sentryDSNForm+"SENTRY_DSN: "+mask, piece) {
				t.Fatalf("error shows %q of the key: %s", piece, msg)
			}
		}
	})
}
