package main

import (
	"errors"
	"log/slog"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/metrics"
)

// newDeps builds what jobs need except the store (connected later). The bucket client is
// built only when the R2 variables are all set (building it does no I/O); without them
// Deps.Bucket stays nil, which is fine for a replica that runs no bucket job (selectJobs
// and `once` refuse a bucket job without them, naming each missing variable).
func newDeps(cfg config.Config, log *slog.Logger, m *metrics.Metrics) (jobs.Deps, error) {
	d := jobs.Deps{Config: cfg, Logger: log, Metrics: m}
	if cfg.RequireBucket() != nil {
		return d, nil
	}
	bc := bucket.Config{
		AccountID:       cfg.R2AccountID,
		Endpoint:        cfg.R2Endpoint,
		Region:          cfg.R2Region,
		AccessKeyID:     cfg.R2AccessKeyID,
		SecretAccessKey: cfg.R2SecretAccessKey,
		Bucket:          cfg.R2BucketName,
		MaxConcurrency:  cfg.SyncConcurrency,
	}
	if m != nil {
		bc.Observer = m.BucketRequest
	}
	c, err := bucket.New(bc)
	if err != nil {
		// bucket.New wraps one error per offending variable, each naming it (and never
		// the secret): unwrap so each becomes its own line.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return d, &usageError{err}
	}
	d.Bucket = c
	return d, nil
}
