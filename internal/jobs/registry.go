package jobs

import (
	"log/slog"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/store"
)

// Deps is what job constructors may use. Constructors must not touch the database or the
// bucket (`bg-worker jobs` builds the registry with zero Deps but a Config); they only
// capture what Run will need.
type Deps struct {
	Config config.Config
	Store  *store.Store
	Logger *slog.Logger
}

// Registry returns every job bg-worker knows, one line each.
func Registry(d Deps) []Job {
	return []Job{
		newPruneRuns(d),
	}
}
