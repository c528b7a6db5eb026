package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/testenv"
	"github.com/bg-worker/bg-worker/migrations"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func tableExists(t *testing.T, conn *pgx.Conn, table string) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestDatabaseURLIsolatedAndMigrated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	urlA, urlB := testenv.DatabaseURL(t), testenv.DatabaseURL(t)
	if urlA == urlB {
		t.Fatalf("same URL twice: %s", urlA)
	}
	a, b := connect(t, urlA), connect(t, urlB)
	for _, conn := range []*pgx.Conn{a, b} {
		if !tableExists(t, conn, "uploads") {
			t.Fatalf("%s: no uploads table", conn.Config().Database)
		}
		v, err := migrations.Current(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if v != migrations.Latest() || v == 0 {
			t.Fatalf("%s: schema version %d, want %d", conn.Config().Database, v, migrations.Latest())
		}
	}
	if _, err := a.Exec(ctx, `INSERT INTO uploads (object_key) VALUES ('only-in-a')`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, `CREATE TABLE only_in_a (x int)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow(ctx, `SELECT count(*) FROM uploads`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database B sees %d uploads rows written to A", n)
	}
	if tableExists(t, b, "only_in_a") {
		t.Fatal("database B sees a table created in A")
	}
}

// Many parallel tests clone the template at once.
func TestDatabaseURLParallel(t *testing.T) {
	t.Parallel()
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			conn := connect(t, testenv.DatabaseURL(t))
			if !tableExists(t, conn, "uploads") {
				t.Fatal("no uploads table")
			}
		})
	}
}

func TestDatabaseDroppedInCleanup(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("inner", func(t *testing.T) {
		conn := connect(t, testenv.DatabaseURL(t)) // closed before the drop: cleanups run last-in first-out
		name = conn.Config().Database
	})
	admin := connect(t, testenv.EmptyDatabaseURL(t))
	var exists bool
	if err := admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

func TestEmptyDatabaseURL(t *testing.T) {
	t.Parallel()
	conn := connect(t, testenv.EmptyDatabaseURL(t))
	if tableExists(t, conn, "uploads") {
		t.Fatal("empty database has an uploads table")
	}
	v, err := migrations.Current(context.Background(), conn)
	if err != nil || v != 0 {
		t.Fatalf("Current = %d, %v; want 0, nil", v, err)
	}
	res, err := migrations.Apply(context.Background(), conn, migrations.DefaultOptions())
	applied := res.Applied
	if err != nil || len(applied) == 0 {
		t.Fatalf("Apply = %v, %v", applied, err)
	}
}

func TestBucketRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	info := testenv.Bucket(t)
	other := testenv.Bucket(t)
	if info.Name == other.Name {
		t.Fatalf("same bucket twice: %s", info.Name)
	}
	client := testenv.S3Client(t, info)
	body := "hello, testenv"
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(info.Name), Key: aws.String("dir/hello.txt"),
		Body: strings.NewReader(body), ContentType: aws.String("text/plain"),
	}); err != nil {
		t.Fatal(err)
	}
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(info.Name), Key: aws.String("dir/hello.txt")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt64(head.ContentLength) != int64(len(body)) || aws.ToString(head.ETag) == "" {
		t.Fatalf("HeadObject: length %d, etag %q", aws.ToInt64(head.ContentLength), aws.ToString(head.ETag))
	}
	// Buckets are isolated.
	_, err = client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(other.Name), Key: aws.String("dir/hello.txt")})
	var nf *types.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("HeadObject in the other bucket: %v, want NotFound", err)
	}
	if info.Dir != "" {
		// Local server: objects are files, and files are objects.
		got, err := os.ReadFile(filepath.Join(info.Dir, "dir", "hello.txt"))
		if err != nil || string(got) != body {
			t.Fatalf("object on disk: %q, %v", got, err)
		}
		if err := os.WriteFile(filepath.Join(info.Dir, "direct.txt"), []byte("abc"), 0o644); err != nil {
			t.Fatal(err)
		}
		head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(info.Name), Key: aws.String("direct.txt")})
		if err != nil || aws.ToInt64(head.ContentLength) != 3 {
			t.Fatalf("HeadObject of a file written directly: %+v, %v", head, err)
		}
	}
}

func TestPostgresServerRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.NewPostgresServer(t)
	url := srv.CreateDatabase(t, true)
	if !strings.Contains(url, "127.0.0.1") {
		t.Fatalf("URL %s", url)
	}
	conn := connect(t, url)
	if _, err := conn.Exec(ctx, `INSERT INTO uploads (object_key) VALUES ('survives')`); err != nil {
		t.Fatal(err)
	}

	srv.Restart(t)
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("a session from before the restart still works")
	}
	conn = connect(t, url)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM uploads WHERE object_key = 'survives'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after restart: count %d, %v", n, err)
	}

	srv.Stop(t)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(cctx, url); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	srv.Start(t)
	conn = connect(t, url)
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	if got := srv.URL("postgres"); !strings.HasPrefix(got, "postgres://postgres@127.0.0.1:") || !strings.Contains(got, "/postgres?") || !strings.Contains(got, "sslmode=disable") || !strings.Contains(got, "search_path=bg_worker%2Cpublic") {
		t.Fatalf("URL(postgres) = %s", got)
	}
}
