package uploadmap_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/uploadmap"
)

// goldenFile is the default mapping's rendering that sqlc reads as a schema file.
const goldenFile = "../../migrations/app/mapping_default.sql"

// TestDefaultRenderingIsSqlcSchema keeps the file sqlc compiles the queries against
// identical to what migrate creates for the default mapping. UPDATE_GOLDEN=1 rewrites it
// (make generate does).
func TestDefaultRenderingIsSqlcSchema(t *testing.T) {
	t.Parallel()
	got := uploadmap.DefaultResolved().Render()
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(filepath.Clean(goldenFile), []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Fatalf("%s is stale: run `make generate` (or UPDATE_GOLDEN=1 go test ./internal/uploadmap)", goldenFile)
	}
}

func TestRenderQuotesIdentifiersAndValues(t *testing.T) {
	t.Parallel()
	r := uploadmap.DefaultResolved()
	r.Mapping.TableSchema, r.Mapping.Table = "app", `Up"load`
	r.Mapping.StatusPending = "it's pending"
	r.Status.Name = "State; DROP TABLE x"
	r.Key.Name = "objectKey"
	sql := r.Render()
	for _, want := range []string{`"app"."Up""load"`, `'it''s pending'::text`, `u."State; DROP TABLE x"`, `u."objectKey"`} {
		if !strings.Contains(sql, want) {
			t.Errorf("rendering lacks %s", want)
		}
	}
	if strings.Contains(sql, "DROP TABLE x\n") || strings.Contains(sql, "it's pending") {
		t.Error("an identifier or value reached the SQL unquoted")
	}
	if r.Fingerprint() == uploadmap.DefaultResolved().Fingerprint() {
		t.Error("different mappings share a fingerprint")
	}
}

func TestAdvice(t *testing.T) {
	t.Parallel()
	r := uploadmap.DefaultResolved()
	got := r.Advice()
	want := `CREATE INDEX CONCURRENTLY "uploads_bg_worker_pending_idx" ON "public"."uploads" ("id") WHERE "status" = 'PENDING'::text;`
	if got != want {
		t.Fatalf("Advice() = %s\nwant %s", got, want)
	}
	_ = config.DefaultUploads()
}
