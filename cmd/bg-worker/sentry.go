package main

import (
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/sentryhook"
)

// sentryFlushTimeout bounds the wait for Sentry when the process exits.
const sentryFlushTimeout = 2 * time.Second

// sentryReporter reports runs to Sentry (internal/sentryhook); nil when SENTRY_DSN is
// empty, and every method is safe on nil.
type sentryReporter struct{ hook *sentryhook.Hook }

// newSentry builds the reporter from the configuration (nil when Sentry is off). It
// never fails the command: a reporter that cannot start is logged and left out.
func newSentry(cfg config.Config, log *slog.Logger) *sentryReporter {
	if cfg.SentryDSN == "" {
		return nil
	}
	secrets := []string{cfg.SentryDSN, cfg.R2SecretAccessKey, cfg.R2AccessKeyID}
	pub, sec := config.SentryKeys(cfg.SentryDSN)
	secrets = append(secrets, pub, sec)
	if cfg.DatabaseURL != "" {
		secrets = append(secrets, cfg.DatabaseURL)
		if pc, err := pgconn.ParseConfig(cfg.DatabaseURL); err == nil {
			secrets = append(secrets, pc.Password)
		}
	}
	release := config.SentryRelease()
	h, err := sentryhook.New(sentryhook.Options{
		DSN: cfg.SentryDSN, Environment: cfg.SentryEnvironment, Release: release,
		WorkerID: cfg.WorkerID, Secrets: secrets, Logger: log,
	})
	if err != nil {
		log.Error("Sentry is off: could not start its client", "error", err, "dsn", config.RedactEndpoint(cfg.SentryDSN))
		return nil
	}
	log.Info("Reporting failed runs and cron check-ins to Sentry", "dsn", config.RedactEndpoint(cfg.SentryDSN),
		"environment", cfg.SentryEnvironment, "release", release)
	return &sentryReporter{hook: h}
}

// Hooks are the scheduler hooks (none when Sentry is off).
func (s *sentryReporter) Hooks() []scheduler.RunHook {
	if s == nil {
		return nil
	}
	return []scheduler.RunHook{s.hook}
}

// Flush sends what is queued, waiting at most sentryFlushTimeout, and stops the reporter.
func (s *sentryReporter) Flush() {
	if s == nil {
		return
	}
	s.hook.Close(sentryFlushTimeout)
}
