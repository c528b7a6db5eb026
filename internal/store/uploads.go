package store

import (
	"context"
	"fmt"
	"time"

	"github.com/bg-worker/bg-worker/internal/store/dbsqlc"
)

// Upload statuses, as the uploads table stores them.
const (
	UploadPending  = "PENDING"
	UploadUploaded = "UPLOADED"
	UploadFailed   = "FAILED"
)

// UploadDue summarises the PENDING uploads at the start of a sync run.
type UploadDue struct {
	// AsOf is the database clock when the summary was taken; the run checks the
	// uploads due at that instant.
	AsOf time.Time
	// Pending counts PENDING uploads under the prefix, Due those whose next check is due.
	Pending, Due int64
	// MaxID is the highest due id (0 when none is due).
	MaxID int64
}

// UploadDueSummary counts PENDING and due uploads whose key starts with prefix ("" for all).
func (s *Store) UploadDueSummary(ctx context.Context, prefix string) (UploadDue, error) {
	r, err := s.q.UploadDueSummary(ctx, prefix)
	if err != nil {
		return UploadDue{}, fmt.Errorf("count pending uploads: %w", err)
	}
	return UploadDue{AsOf: r.AsOf, Pending: r.Pending, Due: r.Due, MaxID: r.MaxDueID}, nil
}

// DueUpload is one PENDING upload to check.
type DueUpload struct {
	ID         int64
	Key        string
	CreatedAt  time.Time
	CheckCount int32
}

// UploadListDue returns up to limit PENDING uploads under prefix that were due at asOf,
// with afterID < id <= maxID, in id order: one keyset page.
func (s *Store) UploadListDue(ctx context.Context, prefix string, asOf time.Time, afterID, maxID int64, limit int) ([]DueUpload, error) {
	rows, err := s.q.UploadListDue(ctx, dbsqlc.UploadListDueParams{
		AfterID: afterID, MaxID: maxID, AsOf: asOf, Prefix: prefix, MaxRows: int32(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list due uploads after id %d: %w", afterID, err)
	}
	out := make([]DueUpload, len(rows))
	for i, r := range rows {
		out[i] = DueUpload{ID: r.ID, Key: r.ObjectKey, CreatedAt: r.CreatedAt, CheckCount: r.CheckCount}
	}
	return out, nil
}

// UploadCheck is the outcome of one upload's check, to be written.
type UploadCheck struct {
	ID int64
	// Status is the new status: UploadUploaded (the object exists), UploadFailed (missing
	// past its TTL) or UploadPending (missing, checked again after a backoff).
	Status      string
	Size        int64  // UPLOADED only
	ETag        string // UPLOADED only; "" is stored as NULL
	ContentType string // UPLOADED only; "" is stored as NULL
	Reason      string // FAILED only: last_error
}

// Backoff is how a still-missing upload's next check is pushed back: next_check_at =
// From + Tick doubled per check already made, at most Max. From is the start of the
// run's tick window, so "one tick" means the next run, however late in its window this
// one wrote.
type Backoff struct {
	From      time.Time
	Tick, Max time.Duration
}

// UploadMarkChecked writes a batch of check outcomes in one statement. Only rows still
// PENDING change (an application may have changed one meanwhile); it returns the new
// status of each row that changed, by id.
func (s *Store) UploadMarkChecked(ctx context.Context, checks []UploadCheck, b Backoff) (map[int64]string, error) {
	if len(checks) == 0 {
		return map[int64]string{}, nil
	}
	if b.From.IsZero() {
		return nil, fmt.Errorf("mark uploads checked: no backoff base time")
	}
	p := dbsqlc.UploadApplyChecksParams{
		BackoffFrom:  b.From,
		TickMs:       float64(b.Tick.Milliseconds()),
		MaxBackoffMs: float64(b.Max.Milliseconds()),
		Ids:          make([]int64, len(checks)),
		Statuses:     make([]string, len(checks)),
		Sizes:        make([]int64, len(checks)),
		Etags:        make([]string, len(checks)),
		ContentTypes: make([]string, len(checks)),
		Errors:       make([]string, len(checks)),
	}
	for i, c := range checks {
		switch c.Status {
		case UploadUploaded, UploadFailed, UploadPending:
		default:
			return nil, fmt.Errorf("mark uploads checked: upload %d: invalid status %q", c.ID, c.Status)
		}
		p.Ids[i], p.Statuses[i], p.Sizes[i] = c.ID, c.Status, c.Size
		p.Etags[i], p.ContentTypes[i], p.Errors[i] = c.ETag, c.ContentType, c.Reason
	}
	rows, err := s.q.UploadApplyChecks(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("mark %d uploads checked: %w", len(checks), err)
	}
	out := make(map[int64]string, len(rows))
	for _, r := range rows {
		out[r.ID] = r.Status
	}
	return out, nil
}

// UploadKeysWithRows returns the subset of keys (object keys as a bucket listing gives
// them) that an upload row names, exactly or after the key normalisation some stores
// apply (a leading '/' dropped, repeated '/' collapsed). One statement, indexed.
func (s *Store) UploadKeysWithRows(ctx context.Context, keys []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := s.q.UploadKeysWithRows(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("look up %d object keys in uploads: %w", len(keys), err)
	}
	for _, k := range rows {
		out[k] = true
	}
	return out, nil
}
