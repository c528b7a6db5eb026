package devservers_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/devservers"
)

// unavailable skips, or fails under CI=true.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format+" (set CI=true to fail instead)", args...)
}

func versitygwBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("VERSITYGW_BIN"); p != "" {
		return p
	}
	if root, err := devservers.RepoRoot(); err == nil {
		if p := filepath.Join(root, ".bin", "versitygw"); fileExists(p) {
			return p
		}
	}
	unavailable(t, "no versitygw: set VERSITYGW_BIN or run make tools")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestPostgres(t *testing.T) {
	if _, err := exec.LookPath("initdb"); err != nil {
		unavailable(t, "initdb not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := devservers.StartPostgres(ctx, devservers.PostgresOptions{Settings: map[string]string{"max_connections": "50"}})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	if err := pg.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, pg.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	var maxConns, db string
	if err := conn.QueryRow(ctx, `SELECT current_setting('max_connections'), current_database()`).Scan(&maxConns, &db); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if maxConns != "50" || db != "app" {
		t.Errorf("max_connections %s, database %s; want 50, app", maxConns, db)
	}

	// Restart, Shutdown and Start keep the data and the port.
	port := pg.Port
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if pg.Running() || pg.PID() != 0 {
		t.Fatalf("after Shutdown: running %v, pid %d", pg.Running(), pg.PID())
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if conn, err = pgx.Connect(ctx, pg.URL("app")); err != nil {
		t.Fatalf("after Shutdown and Start: %v", err)
	}
	conn.Close(ctx)
	if pg.Port != port || !pg.Running() {
		t.Fatalf("after Start: port %d (was %d), running %v", pg.Port, port, pg.Running())
	}

	pid, dir := pg.PID(), pg.Dir
	if !devservers.Alive(pid) || len(devservers.ProcessesUsing(dir)) == 0 {
		t.Fatalf("postmaster %d not alive or not found using %s", pid, dir)
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-pg.Exited():
	default:
		t.Error("Exited not closed after Stop")
	}
	if err := pg.Start(ctx); err == nil {
		t.Error("Start after Stop succeeded")
	}
	if devservers.Alive(pid) || fileExists(dir) || len(devservers.ProcessesUsing(dir)) > 0 {
		t.Errorf("after Stop: alive %v, dir exists %v, users %v", devservers.Alive(pid), fileExists(dir), devservers.ProcessesUsing(dir))
	}
}

func TestVersitygw(t *testing.T) {
	bin := versitygwBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := devservers.StartVersitygw(ctx, devservers.VersitygwOptions{Bin: bin})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	if err := v.CreateBucket(ctx, "bucket-one"); err != nil {
		t.Fatal(err)
	}
	c := v.Client()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bucket-one"), Key: aws.String("a/x.txt"), Body: strings.NewReader("hi")}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(v.BucketDir("bucket-one"), "a", "x.txt"))
	if err != nil || !bytes.Equal(b, []byte("hi")) {
		t.Fatalf("object on disk: %q %v", b, err)
	}
	pid, dir := v.PID(), v.Dir
	if err := v.Stop(); err != nil {
		t.Fatal(err)
	}
	if devservers.Alive(pid) || fileExists(dir) {
		t.Errorf("after Stop: alive %v, dir exists %v", devservers.Alive(pid), fileExists(dir))
	}
}

func TestTempDir(t *testing.T) {
	d, err := devservers.TempDir("", "devservers-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Path, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if fileExists(d.Path) {
		t.Error("directory still there")
	}
}
