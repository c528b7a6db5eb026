package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/uploadmap"
)

// IndexAdvice is an index the application's table lacks for the worker's queries.
type IndexAdvice struct {
	Why       string // what reads the whole table without it
	Statement string // CREATE INDEX CONCURRENTLY …
}

// UploadIndexAdvice asks the planner, with sequential scans disabled, how it would find
// the application's PENDING rows and join due uploads to their rows. A plan that still
// reads the application's table sequentially has no index it could use: the advice
// names the one to create. Asking the planner (not matching index definitions) accepts
// any index that serves, an existing partial index under another name included, and
// stays right whatever the table holds today (with few rows a real plan would seq-scan).
func (s *Store) UploadIndexAdvice(ctx context.Context, r *uploadmap.Resolved) ([]IndexAdvice, error) {
	var out []IndexAdvice
	if s.pool == nil {
		return nil, fmt.Errorf("store: index advice needs a pool")
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			return err
		}
		probes := []struct {
			sql, why, stmt string
		}{
			{`SELECT count(*) FROM uploads_pending WHERE starts_with(object_key, '')`,
				"finding PENDING rows reads the whole table", r.Advice()},
			{`SELECT * FROM uploads_due WHERE seq > 0 ORDER BY seq LIMIT 1000`,
				"joining due uploads to their rows reads the whole table",
				fmt.Sprintf("CREATE UNIQUE INDEX CONCURRENTLY %s ON %s (%s);",
					pgx.Identifier{r.Mapping.Table + "_bg_worker_id_idx"}.Sanitize(), r.Table(), pgx.Identifier{r.ID.Name}.Sanitize())},
		}
		for _, p := range probes {
			var raw []byte
			if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+p.sql).Scan(&raw); err != nil {
				return fmt.Errorf("explain: %w", err)
			}
			var plans []struct {
				Plan planNode `json:"Plan"`
			}
			if err := json.Unmarshal(raw, &plans); err != nil {
				return fmt.Errorf("read plan: %w", err)
			}
			if len(plans) > 0 && plans[0].Plan.seqScans(r.Mapping.TableSchema, r.Mapping.Table) {
				out = append(out, IndexAdvice{Why: p.why, Statement: p.stmt})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check indexes of %s: %w", r.Mapping.QualifiedTable(), err)
	}
	return out, nil
}

type planNode struct {
	NodeType string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Schema   string     `json:"Schema"`
	Plans    []planNode `json:"Plans"`
}

// seqScans reports whether the plan reads schema.table sequentially anywhere.
func (p planNode) seqScans(schema, table string) bool {
	if p.NodeType == "Seq Scan" && p.Relation == table && (p.Schema == "" || p.Schema == schema) {
		return true
	}
	for _, c := range p.Plans {
		if c.seqScans(schema, table) {
			return true
		}
	}
	return false
}

// MissingPrivileges lists what this session's role lacks to run replicas: USAGE on the
// worker's schema, DML on its tables, SELECT on the application's table and UPDATE of
// the mapped columns the worker writes.
func (s *Store) MissingPrivileges(ctx context.Context, r *uploadmap.Resolved) ([]string, error) {
	var missing []string
	var schemaOK bool
	var schema string
	if err := s.db.QueryRow(ctx, `SELECT current_schema(), has_schema_privilege(current_schema(), 'USAGE')`).Scan(&schema, &schemaOK); err != nil {
		return nil, fmt.Errorf("check privileges: %w", err)
	}
	if !schemaOK {
		missing = append(missing, fmt.Sprintf("USAGE on schema %s", schema))
	}
	for _, t := range []string{"worker_jobs", "job_runs", "upload_checks"} {
		var ok bool
		if err := s.db.QueryRow(ctx, `SELECT has_table_privilege($1::regclass, 'SELECT, INSERT, UPDATE, DELETE')`, t).Scan(&ok); err != nil {
			return nil, fmt.Errorf("check privileges on %s: %w", t, err)
		}
		if !ok {
			missing = append(missing, fmt.Sprintf("SELECT, INSERT, UPDATE, DELETE on %s.%s", schema, t))
		}
	}
	table := r.Table()
	var sel bool
	if err := s.db.QueryRow(ctx, `SELECT has_table_privilege($1::regclass, 'SELECT')`, table).Scan(&sel); err != nil {
		return nil, fmt.Errorf("check privileges on %s: %w", r.Mapping.QualifiedTable(), err)
	}
	if !sel {
		missing = append(missing, fmt.Sprintf("SELECT on %s", table))
	}
	for _, c := range r.WrittenColumns() {
		var upd bool
		if err := s.db.QueryRow(ctx, `SELECT has_column_privilege($1::regclass, $2, 'UPDATE')`, table, c).Scan(&upd); err != nil {
			return nil, fmt.Errorf("check privileges on %s: %w", r.Mapping.QualifiedTable(), err)
		}
		if !upd {
			missing = append(missing, fmt.Sprintf("UPDATE (%s) on %s", pgx.Identifier{c}.Sanitize(), table))
		}
	}
	return missing, nil
}
