package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/schedule"
)

// orphanExamples is how many orphan keys the info line names (all are logged at debug).
const orphanExamples = 5

// scanOrphans lists the bucket under R2_PREFIX, page by page, and finds objects that no
// upload row names and that are older than ORPHAN_MIN_AGE (judged against the database
// clock; an object without a Last-Modified is never an orphan). It reports them and, only
// with ORPHAN_DELETE=true, deletes them in DeleteObjects batches of at most 1000 keys.
// Before each batch it looks the keys up again (a row may have appeared since the page
// was read) and checks that the run still holds its lock, so a run that lost its job
// deletes nothing more.
//
// Listing is the expensive part on R2 (each page of up to 1000 keys is a Class A
// request), which is why this is a separate, rare job and sync-uploads never lists.
type scanOrphans struct {
	bucket   *bucket.Client
	prefix   string
	minAge   time.Duration
	delete   bool
	maxBatch int
}

func newScanOrphans(d Deps) Job {
	s := newScanOrphansJob(d)
	interval := d.Config.OrphanScanInterval
	var sched schedule.Schedule
	if d.Config.OrphanScanSchedule != nil { // ORPHAN_SCAN_SCHEDULE as a cron expression
		sched = d.Config.OrphanScanSchedule
		interval = sched.Period()
	}
	return Job{
		Name:       "scan-orphans",
		Interval:   interval,
		UsesBucket: true,
		// Deleting objects is an effect outside the database: a takeover waits out the
		// previous holder's bound first. Reporting only is read-only.
		ExternalEffects: d.Config.OrphanDelete,
		Description:     "lists the bucket and reports (ORPHAN_DELETE=true: deletes) objects no upload names",
		Run:             s.run,
	}
}

func newScanOrphansJob(d Deps) *scanOrphans {
	minAge := d.Config.OrphanMinAge
	return &scanOrphans{bucket: d.Bucket, prefix: d.Config.R2Prefix, minAge: minAge,
		delete: d.Config.OrphanDelete, maxBatch: bucket.MaxDeleteKeys}
}

type orphanCounts struct {
	pages, listed, withRow, young, orphans, orphanBytes int64
	deleted, deleteErrors, reclaimed                    int64
	examples                                            []string
	firstDeleteErr                                      error
}

func (s *scanOrphans) run(ctx context.Context, r Run) error {
	start := time.Now()
	log := r.Logger()
	log.Info("Starting orphan scan...", "prefix", s.prefix, "min_age", s.minAge, "delete", s.delete)
	if s.bucket == nil {
		log.Error("Cannot scan: " + errNoBucket.Error())
		return errNoBucket
	}
	if err := s.bucket.CheckBucket(ctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		log.Error("Bucket check failed; nothing scanned or deleted", "error", err)
		return err
	}
	now, err := r.Store().Now(ctx)
	if err != nil {
		return err
	}
	cutoff := now.Add(-s.minAge)
	debug := log.Enabled(ctx, slog.LevelDebug)

	var c orphanCounts
	var pending []string
	err = s.bucket.List(ctx, s.prefix, func(page []bucket.Object) error {
		c.pages++
		c.listed += int64(len(page))
		keys := make([]string, len(page))
		for i, o := range page {
			keys[i] = o.Key
		}
		claimed, err := r.Store().UploadKeysWithRows(ctx, keys)
		if err != nil {
			return err
		}
		for _, o := range page {
			switch {
			case claimed[o.Key]:
				c.withRow++
				continue
			case o.LastModified.IsZero() || o.LastModified.After(cutoff):
				c.young++
				continue
			}
			c.orphans++
			c.orphanBytes += o.Size
			if len(c.examples) < orphanExamples {
				c.examples = append(c.examples, o.Key)
			}
			if debug {
				log.Debug("Orphan", "key", o.Key, "size", o.Size, "last_modified", o.LastModified)
			}
			if s.delete {
				pending = append(pending, o.Key)
				if len(pending) >= s.maxBatch {
					if err := s.deleteBatch(ctx, r, pending, &c); err != nil {
						return err
					}
					pending = pending[:0]
				}
			}
		}
		return nil
	})
	if err == nil && len(pending) > 0 {
		err = s.deleteBatch(ctx, r, pending, &c)
	}

	st := r.Stats()
	st.Set("pages", c.pages)
	st.Set("listed", c.listed)
	st.Set("with_row", c.withRow)
	st.Set("too_young", c.young)
	st.Set("orphans", c.orphans)
	st.Set("orphan_bytes", c.orphanBytes)
	st.Set("deleted", c.deleted)
	st.Set("delete_errors", c.deleteErrors)
	st.Set("reclaimed_by_row", c.reclaimed)

	if c.orphans > 0 {
		what := "not deleted (ORPHAN_DELETE=false)"
		if s.delete {
			what = fmt.Sprintf("%d deleted", c.deleted)
		}
		log.Info(fmt.Sprintf("Found %d orphaned objects older than %s (%d bytes); %s", c.orphans, s.minAge, c.orphanBytes, what),
			"examples", c.examples)
	}
	if err == nil && c.deleteErrors > 0 {
		err = fmt.Errorf("%d orphans could not be deleted; first: %w", c.deleteErrors, c.firstDeleteErr)
	}
	summary := []any{"listed", c.listed, "pages", c.pages, "with_row", c.withRow, "too_young", c.young,
		"orphans", c.orphans, "deleted", c.deleted, "delete_errors", c.deleteErrors,
		"duration", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		log.Error("Orphan scan failed", append(summary, "error", err.Error())...)
		return err
	}
	log.Info("Orphan scan completed", summary...)
	return nil
}

// deleteBatch deletes up to maxBatch orphans: keys that gained an upload row since their
// page was read are kept, then the lock is checked, then one DeleteObjects call.
// Per-key failures are counted (the run fails at its end); a failed call stops the run.
func (s *scanOrphans) deleteBatch(ctx context.Context, r Run, keys []string, c *orphanCounts) error {
	claimed, err := r.Store().UploadKeysWithRows(ctx, keys)
	if err != nil {
		return err
	}
	batch := make([]string, 0, len(keys))
	for _, k := range keys {
		if claimed[k] {
			c.reclaimed++
			continue
		}
		batch = append(batch, k)
	}
	if len(batch) == 0 {
		return nil
	}
	if err := r.CheckLock(ctx); err != nil {
		return fmt.Errorf("before deleting %d orphans: %w", len(batch), err)
	}
	deleted, err := s.bucket.Delete(ctx, batch)
	c.deleted += int64(len(deleted))
	log := r.Logger()
	if log.Enabled(ctx, slog.LevelDebug) {
		for _, k := range deleted {
			log.Debug("Deleted orphan", "key", k)
		}
	}
	var de *bucket.DeleteError
	if errors.As(err, &de) {
		c.deleteErrors += int64(len(de.Errors))
		if c.firstDeleteErr == nil {
			c.firstDeleteErr = err
		}
		log.Warn("Some orphans were not deleted", "count", len(de.Errors), "error", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %d orphans: %w", len(batch), err)
	}
	return nil
}
