package config

import (
	"net/url"
	"runtime/debug"
	"strings"
	"unicode"
)

// Version is the release bg-worker reports to Sentry when the build carries none (a
// Docker build with -buildvcs=false): set it at link time with
// -ldflags "-X github.com/bg-worker/bg-worker/internal/config.Version=v1.2.3".
var Version string

// loadSentry reads SENTRY_DSN (optional; empty turns Sentry off) and SENTRY_ENVIRONMENT.
// A DSN that does not parse is reported naming SENTRY_DSN and never quoting its keys: the
// public key (and a legacy secret key) are credentials of the Sentry project.
func loadSentry(env LookupEnv, c *Config, bad func(name, format string, args ...any)) {
	get := func(name string) string { v, _ := env(name); return strings.TrimSpace(v) }
	if v := get("SENTRY_DSN"); v != "" {
		if msg := checkSentryDSN(v); msg != "" {
			bad("SENTRY_DSN", "%s", msg)
		} else {
			c.SentryDSN = v
		}
	}
	if v := get("SENTRY_ENVIRONMENT"); v != "" {
		switch {
		case len(v) > 64:
			bad("SENTRY_ENVIRONMENT", "%d characters; Sentry allows at most 64", len(v))
		case strings.ContainsFunc(v, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || !unicode.IsPrint(r) }):
			bad("SENTRY_ENVIRONMENT", "%q must not contain '/', spaces or control characters (Sentry rejects them)", v)
		case v == "None":
			bad("SENTRY_ENVIRONMENT", `"None" is reserved by Sentry`)
		default:
			c.SentryEnvironment = v
		}
	}
}

// sentryDSNForm is how a DSN looks, for error messages.
const sentryDSNForm = "https://<public key>@<host>/<project id>, as shown in the Sentry project's Client Keys (DSN)"

// checkSentryDSN says what is wrong with a Sentry DSN, or "". It accepts exactly what the
// Go SDK accepts (scheme http or https, a public key, a host, a valid port, a project id
// as the last path segment). Its message never contains the keys: only a redacted form.
func checkSentryDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Error quotes the input: never use its text.
		return "does not parse as a URL; want " + sentryDSNForm
	}
	shown := RedactEndpoint(dsn) // the keys are user info: hidden whole
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "must start with https:// (or http://): want " + sentryDSNForm
	case u.User == nil || u.User.Username() == "":
		return "has no public key (" + shown + "): want " + sentryDSNForm
	case u.Hostname() == "":
		return "has no host (" + shown + "): want " + sentryDSNForm
	}
	if p := u.Port(); p != "" {
		for _, r := range p {
			if r < '0' || r > '9' {
				return "has an invalid port (" + shown + ")"
			}
		}
	}
	segs := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if u.Path == "" || segs[len(segs)-1] == "" {
		return "has no project id, the last part of its path (" + shown + "): want " + sentryDSNForm
	}
	return ""
}

// SentryKeys returns the DSN's public and secret key (empty when absent), for scrubbing
// them from whatever is sent.
func SentryKeys(dsn string) (public, secret string) {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return "", ""
	}
	secret, _ = u.User.Password()
	return u.User.Username(), secret
}

// SentryRelease is the release reported with events and check-ins: "bg-worker@" and the
// build's version — the main module's version when built from a tagged module, else
// Version (set at link time), else the VCS revision (12 digits, "-dirty" when modified),
// else "devel".
func SentryRelease() string {
	return "bg-worker@" + buildVersion(debug.ReadBuildInfo())
}

func buildVersion(info *debug.BuildInfo, ok bool) string {
	if ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	if Version != "" {
		return Version
	}
	if ok {
		var rev string
		var dirty bool
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "devel"
}
