package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
	"github.com/bg-worker/bg-worker/migrations"
)

// Real application tables, mapped: migrate as a role with only CREATE on the database
// touches nothing of the application's; a replica role with only the documented grants
// verifies uploads into the application's own columns and values; scan-orphans counts a
// row of the application's table as what makes an object not an orphan; prune-runs drops
// the worker's state of rows the application deleted.
func TestApplicationTables(t *testing.T) {
	t.Parallel()
	for _, s := range testenv.AppShapes {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			d := testenv.NewAppDB(t, ctx, s)
			env := map[string]string{"DATABASE_URL": d.MigrateURL}
			maps.Copy(env, s.Env)
			cfg, err := config.Load(config.MapEnv(env))
			if err != nil {
				t.Fatal(err)
			}
			opts := migrations.Options{Schema: cfg.Schema(), Uploads: cfg.Uploads}

			before := d.Relations(t, ctx)
			res, err := store.Migrate(ctx, d.MigrateURL, opts)
			if err != nil {
				t.Fatalf("migrate as %s: %v", d.MigrateRole, err)
			}
			if res.CreatedTable || !res.CreatedSchema || !res.MappingInstalled || len(res.Applied) == 0 {
				t.Errorf("migrate result %+v", res)
			}
			if after := d.Relations(t, ctx); !slices.Equal(before, after) {
				t.Errorf("migrate changed relations outside bg_worker:\nbefore %v\nafter  %v", before, after)
			}
			// A second migrate with the same mapping only reads.
			if res, err := store.Migrate(ctx, d.MigrateURL, opts); err != nil || res.MappingInstalled || len(res.Applied) > 0 {
				t.Errorf("second migrate: %+v, %v", res, err)
			}

			h := newHarnessFor(t, d.ReplicaURL, d.AdminURL)
			// Without USAGE on the worker's schema the replica is told so, not "migrate".
			if _, err := h.st.CheckMapping(ctx, cfg.Uploads); err == nil || !strings.Contains(err.Error(), "DATABASE_SCHEMA: this role has no USAGE on schema") {
				t.Errorf("CheckMapping without USAGE: %v", err)
			}
			d.GrantReplica(t, ctx, res.Mapping.GrantSQL(d.ReplicaRole))
			mapping, err := h.st.CheckMapping(ctx, cfg.Uploads)
			if err != nil {
				t.Fatalf("CheckMapping as the replica role: %v", err)
			}
			if missing, err := h.st.MissingPrivileges(ctx, mapping); err != nil || len(missing) > 0 {
				t.Fatalf("replica lacks %v (%v)", missing, err)
			}
			var super, owns bool
			if err := d.Admin.QueryRow(ctx, `SELECT rolsuper, EXISTS (SELECT 1 FROM pg_class WHERE relowner = r.oid)
				FROM pg_roles r WHERE rolname = $1`, d.ReplicaRole).Scan(&super, &owns); err != nil || super || owns {
				t.Fatalf("replica role: superuser %v, owns relations %v, %v", super, owns, err)
			}

			present := []string{"up/a.txt", "up/b ü ?#.txt"}
			for _, k := range present {
				h.put(k, "body of "+k, "text/plain")
				d.Insert(t, ctx, k, 0)
			}
			d.Insert(t, ctx, "up/young-missing.txt", 0)
			d.Insert(t, ctx, "up/old-missing.txt", 72*time.Hour)

			c := h.config()
			c.Uploads = cfg.Uploads
			run := h.run(h.job(h.deps(c, h.client(nil)), "sync-uploads"), runOpts{})
			if run.Status != store.StatusSucceeded {
				t.Fatalf("sync run: %s %v\n%s", run.Status, run.Err, run.Logs)
			}
			if run.Stats["checked"] != 4 || run.Stats["uploaded"] != 2 || run.Stats["failed"] != 1 || run.Stats["still_pending"] != 1 {
				t.Errorf("sync stats %v", run.Stats)
			}
			str := testenv.Str
			for _, k := range present {
				r := d.Read(t, ctx, k)
				if str(r.Status) != s.Uploaded || str(r.Untouched) != s.Untouched {
					t.Errorf("%q: status %s, untouched %s; want %s, %s", k, str(r.Status), str(r.Untouched), s.Uploaded, s.Untouched)
				}
				if _, mapped := s.Env["UPLOADS_SIZE_COLUMN"]; mapped && str(r.Size) != fmt.Sprint(len("body of "+k)) {
					t.Errorf("%q: size %s", k, str(r.Size))
				}
				if _, mapped := s.Env["UPLOADS_ETAG_COLUMN"]; mapped && r.ETag == nil {
					t.Errorf("%q: etag not written", k)
				}
				if _, mapped := s.Env["UPLOADS_CONTENT_TYPE_COLUMN"]; mapped && str(r.ContentType) != "text/plain" {
					t.Errorf("%q: content type %s", k, str(r.ContentType))
				}
				if _, mapped := s.Env["UPLOADS_VERIFIED_AT_COLUMN"]; mapped && r.VerifiedAt == nil {
					t.Errorf("%q: verified-at not written", k)
				}
			}
			if r := d.Read(t, ctx, "up/old-missing.txt"); str(r.Status) != s.Failed {
				t.Errorf("old missing: %s, want %s", str(r.Status), s.Failed)
			}
			if r := d.Read(t, ctx, "up/young-missing.txt"); str(r.Status) != s.Pending {
				t.Errorf("young missing: %s, want %s", str(r.Status), s.Pending)
			}
			var lastErr string
			if err := d.Admin.QueryRow(ctx, `SELECT last_error FROM bg_worker.upload_checks WHERE outcome = 'FAILED'`).Scan(&lastErr); err != nil ||
				!strings.Contains(lastErr, "SYNC_PENDING_TTL") {
				t.Errorf("FAILED upload's recorded error: %q, %v", lastErr, err)
			}

			// scan-orphans: objects named by a row of the application's table are not
			// orphans; an old object no row names is.
			old := time.Now().Add(-48 * time.Hour)
			h.writeFile("up/orphan.bin", "x", old)
			for _, k := range present {
				h.writeFile(k, "body of "+k, old)
			}
			run = h.run(h.job(h.deps(c, h.client(nil)), "scan-orphans"), runOpts{})
			if run.Status != store.StatusSucceeded || run.Stats["orphans"] != 1 || run.Stats["with_row"] != int64(len(present)) {
				t.Errorf("scan-orphans: %s %v stats %v", run.Status, run.Err, run.Stats)
			}

			// prune-runs forgets the worker's state of rows the application deleted.
			d.Exec(t, ctx, "DELETE FROM "+s.Table)
			if run = h.run(h.job(h.deps(c, nil), "prune-runs"), runOpts{}); run.Status != store.StatusSucceeded || run.Stats["pruned_upload_checks"] != 1 {
				t.Errorf("prune-runs: %s %v stats %v (want the young row's state pruned)", run.Status, run.Err, run.Stats)
			}
		})
	}
}

// A mapping that does not match the catalog is refused before anything is created, one
// error per variable, each naming what the database has instead.
func TestApplicationTableMappingErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prisma := testenv.NewAppDB(t, ctx, testenv.AppShapes[0])
	existing := testenv.NewAppDB(t, ctx, testenv.AppShapes[2])
	cases := []struct {
		name string
		d    *testenv.AppDB
		env  map[string]string
		want []string // "VAR: substring"
	}{
		{"no mapping on a database with another uploads shape", existing, map[string]string{},
			[]string{`UPLOADS_KEY_COLUMN: no column "object_key" in public.uploads (it has: "id", "path", "status", "owner_id", "bucket", "created")`}},
		{"an explicitly named optional column must exist", existing, map[string]string{"UPLOADS_KEY_COLUMN": "path", "UPLOADS_ETAG_COLUMN": "etag"},
			[]string{`UPLOADS_ETAG_COLUMN: no column "etag" in public.uploads`}},
		{"wrong case", prisma, map[string]string{"UPLOADS_TABLE": "upload"}, []string{`UPLOADS_TABLE: no table public.upload`, `"Upload"`}},
		{"missing column", prisma, map[string]string{"UPLOADS_TABLE": "Upload", "UPLOADS_KEY_COLUMN": "object_key"},
			[]string{`UPLOADS_KEY_COLUMN: no column "object_key" in public.Upload (it has: "id", "objectKey"`}},
		{"enum lacks the value", prisma, map[string]string{"UPLOADS_TABLE": "Upload", "UPLOADS_KEY_COLUMN": "objectKey",
			"UPLOADS_STATUS_UPLOADED": "uploaded", "UPLOADS_STATUS_FAILED": "ERROR"},
			[]string{`UPLOADS_STATUS_UPLOADED: "uploaded" is not a value of public."UploadStatus" (it has: "PENDING", "UPLOADED", "FAILED", "DELETED")`,
				`UPLOADS_STATUS_FAILED: "ERROR" is not a value of`}},
		{"unsupported type", prisma, map[string]string{"UPLOADS_TABLE": "Upload", "UPLOADS_KEY_COLUMN": "objectKey",
			"UPLOADS_SIZE_COLUMN": "createdAt", "UPLOADS_CREATED_AT_COLUMN": "userId"},
			[]string{`UPLOADS_CREATED_AT_COLUMN: column "userId" of public.Upload is text; supported: timestamp`,
				`UPLOADS_SIZE_COLUMN: column "createdAt" of public.Upload is timestamp(3) without time zone; supported: bigint`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			env := map[string]string{"DATABASE_URL": d.MigrateURL}
			maps.Copy(env, tc.env)
			cfg, err := config.Load(config.MapEnv(env))
			if err != nil {
				t.Fatal(err)
			}
			_, err = store.Migrate(ctx, d.MigrateURL, migrations.Options{Schema: cfg.Schema(), Uploads: cfg.Uploads})
			if err == nil {
				t.Fatal("migrate accepted the mapping")
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a configuration error: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			var exists bool
			if err := d.Admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'bg_worker')`).Scan(&exists); err != nil || exists {
				t.Errorf("a refused mapping created the worker's schema (%v)", err)
			}
		})
	}
}
