// Package wiring builds, from a loaded configuration, what bg-worker's jobs and
// scheduler need: the jobs' dependencies (the bucket client among them), the store's
// pool options and the lock sessions' bounds. cmd/bg-worker and cmd/bg-bench (which
// runs the same wiring in process to profile it) both build them here.
package wiring

import (
	"log/slog"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/store"
)

// Deps builds what jobs need except the store (connected later). The bucket client is
// built only when the R2 variables are all set (building it does no I/O); without them
// Deps.Bucket stays nil, which is fine for a replica that runs no bucket job. An error
// is bucket.New's: it wraps one error per offending variable, each naming it (never the
// secret).
func Deps(cfg config.Config, log *slog.Logger, m *metrics.Metrics) (jobs.Deps, error) {
	d := jobs.Deps{Config: cfg, Logger: log, Metrics: m}
	if cfg.RequireBucket() != nil {
		return d, nil
	}
	c, err := bucket.New(BucketConfig(cfg, m))
	if err != nil {
		return d, err
	}
	d.Bucket = c
	return d, nil
}

// BucketConfig is the bucket client's configuration from the R2 variables and
// SYNC_CONCURRENCY; m, when set, observes every request.
func BucketConfig(cfg config.Config, m *metrics.Metrics) bucket.Config {
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
	return bc
}

// StoreOptions are the pool's options: named WORKER_ID on the server, in the worker's
// schema, idle-in-transaction sessions ended after LOCK_TIMEOUT.
func StoreOptions(cfg config.Config, maxConns int32) store.Options {
	return store.Options{ApplicationName: cfg.WorkerID, MaxConns: maxConns,
		IdleInTxTimeout: cfg.LockTimeout, Schema: cfg.Schema()}
}

// WorkerPoolSize is the pool size of a worker running jobs: sync-uploads' concurrency
// needs a connection per few HEADs in flight.
func WorkerPoolSize(cfg config.Config) int32 { return int32(max(8, cfg.SyncConcurrency/4)) }

// LockOptions are the lock sessions' bounds from LOCK_HEARTBEAT and LOCK_TIMEOUT.
func LockOptions(cfg config.Config) lock.Options {
	return lock.Options{Heartbeat: cfg.LockHeartbeat, Timeout: cfg.LockTimeout}
}
