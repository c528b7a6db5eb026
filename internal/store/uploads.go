package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/store/dbsqlc"
	"github.com/bg-worker/bg-worker/internal/uploadmap"
	"github.com/bg-worker/bg-worker/migrations"
)

// Outcomes of one upload's check, as UploadMarkChecked takes them (the mapping turns
// them into the application's own status values).
const (
	UploadUploaded = uploadmap.OutcomeUploaded
	UploadFailed   = uploadmap.OutcomeFailed
	UploadPending  = uploadmap.OutcomePending
	// UploadRetry is a transient error: status unchanged, the next check backs off.
	UploadRetry = uploadmap.OutcomeRetry
)

// UploadDue summarises the PENDING uploads at the start of a sync run.
type UploadDue struct {
	// AsOf is the database clock when the summary was taken; the run checks the
	// uploads due at that instant.
	AsOf time.Time
	// Pending counts PENDING uploads under the prefix, Due those whose next check is due.
	Pending, Due int64
	// MaxSeq is the highest due seq (0 when none is due).
	MaxSeq int64
}

// UploadRegister starts tracking PENDING uploads under prefix that the worker has not
// seen yet (and ones the application set PENDING again); it returns how many.
func (s *Store) UploadRegister(ctx context.Context, prefix string) (int64, error) {
	n, err := s.q.UploadCheckRegister(ctx, prefix)
	if err != nil {
		return 0, fmt.Errorf("register new pending uploads: %w", err)
	}
	return n, nil
}

// UploadAnyUnregistered reports whether UploadRegister would register anything (one
// read, so an idle tick needs no write transaction).
func (s *Store) UploadAnyUnregistered(ctx context.Context, prefix string) (bool, error) {
	any, err := s.q.UploadCheckAnyUnregistered(ctx, prefix)
	if err != nil {
		return false, fmt.Errorf("look for new pending uploads: %w", err)
	}
	return any, nil
}

// UploadDueSummary counts PENDING and due uploads whose key starts with prefix ("" for all).
func (s *Store) UploadDueSummary(ctx context.Context, prefix string) (UploadDue, error) {
	r, err := s.q.UploadDueSummary(ctx, prefix)
	if err != nil {
		return UploadDue{}, fmt.Errorf("count pending uploads: %w", err)
	}
	return UploadDue{AsOf: r.AsOf, Pending: r.Pending, Due: r.Due, MaxSeq: r.MaxDueSeq}, nil
}

// DueUpload is one PENDING upload to check.
type DueUpload struct {
	Seq        int64  // the worker's order (keyset)
	ID         string // the application's id, as text
	Key        string
	CreatedAt  time.Time // the mapped created_at, else when the worker first saw the row
	CheckCount int32
}

// UploadListDue returns up to limit PENDING uploads under prefix that were due at asOf,
// with afterSeq < seq <= maxSeq, in seq order: one keyset page.
func (s *Store) UploadListDue(ctx context.Context, prefix string, asOf time.Time, afterSeq, maxSeq int64, limit int) ([]DueUpload, error) {
	rows, err := s.q.UploadListDue(ctx, dbsqlc.UploadListDueParams{
		AfterSeq: afterSeq, MaxSeq: maxSeq, AsOf: asOf, Prefix: prefix, MaxRows: int32(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list due uploads after seq %d: %w", afterSeq, err)
	}
	out := make([]DueUpload, len(rows))
	for i, r := range rows {
		out[i] = DueUpload{Seq: r.Seq, ID: r.UploadID, Key: r.ObjectKey, CreatedAt: r.CreatedAt, CheckCount: r.CheckCount}
	}
	return out, nil
}

// UploadCheck is the outcome of one upload's check, to be written.
type UploadCheck struct {
	ID string
	// Status is the outcome: UploadUploaded (the object exists), UploadFailed (missing
	// past its TTL), UploadPending (missing or its key rejected, checked again after a
	// backoff) or UploadRetry (a transient error: checked again after its own backoff).
	Status      string
	Size        int64  // UPLOADED only
	ETag        string // UPLOADED only; "" is stored as NULL
	ContentType string // UPLOADED only; "" is stored as NULL
	Reason      string // last_error: why it FAILED, why its key was rejected, the transient error
}

// Backoff is how a still-missing upload's next check is pushed back: next_check_at =
// From + Tick doubled per check already made, at most Max. From is the start of the
// run's tick window, so "one tick" means the next run, however late in its window this
// one wrote.
type Backoff struct {
	From      time.Time
	Tick, Max time.Duration
}

// UploadMarkChecked writes a batch of check outcomes in one statement (the mapping's
// upload_checks_apply). Only uploads still PENDING in the application's table change, and
// of those only rows nobody else holds locked (they are checked again next tick); it
// returns the outcome written for each upload that changed, by id.
func (s *Store) UploadMarkChecked(ctx context.Context, checks []UploadCheck, b Backoff) (map[string]string, error) {
	if len(checks) == 0 {
		return map[string]string{}, nil
	}
	if b.From.IsZero() {
		return nil, fmt.Errorf("mark uploads checked: no backoff base time")
	}
	p := dbsqlc.UploadCheckApplyParams{
		BackoffFrom:  b.From,
		TickMs:       float64(b.Tick.Milliseconds()),
		MaxBackoffMs: float64(b.Max.Milliseconds()),
		Ids:          make([]string, len(checks)),
		Outcomes:     make([]string, len(checks)),
		Sizes:        make([]int64, len(checks)),
		Etags:        make([]string, len(checks)),
		ContentTypes: make([]string, len(checks)),
		Errors:       make([]string, len(checks)),
	}
	for i, c := range checks {
		switch c.Status {
		case UploadUploaded, UploadFailed, UploadPending, UploadRetry:
		default:
			return nil, fmt.Errorf("mark uploads checked: upload %s: invalid status %q", c.ID, c.Status)
		}
		p.Ids[i], p.Outcomes[i], p.Sizes[i] = c.ID, c.Status, c.Size
		p.Etags[i], p.ContentTypes[i], p.Errors[i] = c.ETag, c.ContentType, c.Reason
	}
	rows, err := s.q.UploadCheckApply(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("mark %d uploads checked: %w", len(checks), err)
	}
	asked := make(map[string]string, len(checks))
	for _, c := range checks {
		asked[c.ID] = c.Status
	}
	out := make(map[string]string, len(rows))
	for _, r := range rows {
		out[r.UploadID] = asked[r.UploadID]
	}
	return out, nil
}

// UploadState is the worker's bookkeeping for one upload.
type UploadState struct {
	CheckCount  int32
	ErrorCount  int32
	NextCheckAt time.Time
	FirstSeenAt time.Time
	LastError   string
	Outcome     string // "" while PENDING
	ResolvedAt  *time.Time
}

// UploadState returns the worker's state of the upload with this id (ErrNotFound when
// it has never seen it).
func (s *Store) UploadState(ctx context.Context, id string) (UploadState, error) {
	r, err := s.q.UploadCheckGet(ctx, id)
	if err != nil {
		return UploadState{}, notFound(err)
	}
	return UploadState{CheckCount: r.CheckCount, ErrorCount: r.ErrorCount, NextCheckAt: r.NextCheckAt, FirstSeenAt: r.FirstSeenAt,
		LastError: r.LastError.String, Outcome: r.Outcome.String, ResolvedAt: r.ResolvedAt}, nil
}

// UploadPruneChecks deletes up to max state rows: first those resolved before before,
// then those whose upload the application deleted or resolved itself.
func (s *Store) UploadPruneChecks(ctx context.Context, before time.Time, max int) (int64, error) {
	n, err := s.q.UploadCheckPruneResolved(ctx, dbsqlc.UploadCheckPruneResolvedParams{Before: &before, MaxRows: int32(max)})
	if err != nil {
		return 0, fmt.Errorf("prune resolved upload checks: %w", err)
	}
	if n >= int64(max) {
		return n, nil
	}
	m, err := s.q.UploadCheckPruneStale(ctx, int32(int64(max)-n))
	if err != nil {
		return n, fmt.Errorf("prune stale upload checks: %w", err)
	}
	return n + m, nil
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

// CheckMapping validates m against the catalog and against the mapping `migrate`
// installed. Problems a user fixes in configuration (or by running migrate) come back as
// errors.Join of *config.Error naming the variable.
func (s *Store) CheckMapping(ctx context.Context, m config.UploadsMapping) (*uploadmap.Resolved, error) {
	r, err := uploadmap.Resolve(ctx, s.db, m)
	if err != nil {
		return nil, err
	}
	in, err := migrations.InstalledMapping(ctx, s.db)
	if err != nil {
		return nil, err
	}
	if in.Fingerprint == "" {
		if err := s.SchemaAccess(ctx); err != nil {
			return nil, err
		}
		return nil, &config.Error{Var: "UPLOADS_TABLE", Msg: "no uploads mapping installed in this schema; run `bg-worker migrate`"}
	}
	if in.Fingerprint == r.Fingerprint() {
		return r, nil
	}
	recorded := in.Mapping
	return nil, mappingDiff(recorded, m)
}

// mappingDiff names each variable whose value differs from what migrate installed.
func mappingDiff(recorded, m config.UploadsMapping) error {
	var errs []error
	diff := func(v, was, now string) {
		if was != now {
			errs = append(errs, &config.Error{Var: v, Msg: fmt.Sprintf("%q differs from %q, which `bg-worker migrate` installed; run migrate with this configuration (replicas of one fleet must share it)", now, was)})
		}
	}
	diff("UPLOADS_TABLE", recorded.QualifiedTable(), m.QualifiedTable())
	rc, mc := recorded.Columns(), m.Columns()
	for i := range mc {
		diff(mc[i].Var, rc[i].Name, mc[i].Name)
	}
	diff("UPLOADS_STATUS_PENDING", recorded.StatusPending, m.StatusPending)
	diff("UPLOADS_STATUS_UPLOADED", recorded.StatusUploaded, m.StatusUploaded)
	diff("UPLOADS_STATUS_FAILED", recorded.StatusFailed, m.StatusFailed)
	if len(errs) == 0 {
		errs = append(errs, &config.Error{Var: "UPLOADS_TABLE", Msg: fmt.Sprintf("the columns of %s changed type since `bg-worker migrate` installed the mapping; run migrate", m.QualifiedTable())})
	}
	return errors.Join(errs...)
}

// MappingFingerprint is the fingerprint migrate recorded ("" when none).
func (s *Store) MappingFingerprint(ctx context.Context) (string, error) {
	in, err := migrations.InstalledMapping(ctx, s.db)
	return in.Fingerprint, err
}

// SchemaAccess reports a worker schema this session cannot use: PostgreSQL silently
// skips a search_path entry without USAGE, which would otherwise read as "nothing
// migrated yet".
func (s *Store) SchemaAccess(ctx context.Context) error {
	var schema string
	var exists, usage bool
	err := s.db.QueryRow(ctx, `SELECT n.name, n.oid IS NOT NULL, coalesce(has_schema_privilege(n.oid, 'USAGE'), false)
		FROM (SELECT trim(both '"' from current_setting('search_path')) AS name) p
		CROSS JOIN LATERAL (SELECT p.name, (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = p.name) AS oid) n`).Scan(&schema, &exists, &usage)
	if err != nil {
		return fmt.Errorf("check schema access: %w", err)
	}
	if exists && !usage {
		return &config.Error{Var: "DATABASE_SCHEMA", Msg: fmt.Sprintf("this role has no USAGE on schema %q (GRANT USAGE ON SCHEMA %s TO …)", schema, pgx.Identifier{schema}.Sanitize())}
	}
	return nil
}
