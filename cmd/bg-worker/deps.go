package main

import (
	"errors"
	"log/slog"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/wiring"
)

// newDeps builds what jobs need except the store (wiring.Deps); a bucket configuration
// error is a usage error, one line per offending variable (selectJobs and `once` refuse a
// bucket job without the R2 variables, naming each missing one).
func newDeps(cfg config.Config, log *slog.Logger, m *metrics.Metrics) (jobs.Deps, error) {
	d, err := wiring.Deps(cfg, log, m)
	if err != nil {
		// bucket.New wraps one error per offending variable, each naming it (and never
		// the secret): unwrap so each becomes its own line.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return d, &usageError{err}
	}
	return d, nil
}
