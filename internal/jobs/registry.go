package jobs

import (
	"log/slog"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/metrics"
)

// Deps is what job constructors may use. Constructors must not touch the bucket or do
// I/O (`bg-worker jobs` builds the registry with zero Deps but a Config); they only
// capture what Run will need. The database reaches a job through its Run.
type Deps struct {
	Config config.Config
	Logger *slog.Logger
	// Bucket is the R2/S3 client for bucket jobs; nil when the R2 variables are not set
	// (a bucket job then fails its runs with an error naming them).
	Bucket *bucket.Client
	// Metrics, when set, receives the jobs' own metrics (uploads checked, HEADs in flight).
	Metrics *metrics.Metrics
}

// Registry returns every job bg-worker knows, one line each.
func Registry(d Deps) []Job {
	return WithTimeouts(d, []Job{
		newPruneRuns(d),
		newSyncUploads(d),
		newScanOrphans(d),
	})
}

// WithTimeouts applies JOB_TIMEOUTS to js.
func WithTimeouts(d Deps, js []Job) []Job {
	for i := range js {
		if t, ok := d.Config.JobTimeouts[js[i].Name]; ok {
			js[i].Timeout = t
		}
	}
	return js
}
