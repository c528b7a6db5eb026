package main

import (
	"log/slog"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/metrics"
)

// newDeps builds what jobs need except the store (connected later).
func newDeps(cfg config.Config, log *slog.Logger, m *metrics.Metrics) (jobs.Deps, error) {
	return jobs.Deps{Config: cfg, Logger: log}, nil
}
