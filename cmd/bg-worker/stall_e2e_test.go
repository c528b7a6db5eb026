package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

// With only keys the bucket can never answer due (empty, over 1,024 bytes, "/", "../x"),
// three real replicas run sync-uploads with 0 failed runs and the lock never changes
// hands: a rejected key is its upload's answer (backoff, last_error), not the run's.
func TestE2EUnanswerableKeysNeverMoveLeadership(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	info := testenv.Bucket(t)
	for _, k := range []string{"", strings.Repeat("k", 1100), "/", "../x"} {
		if _, err := db.Exec(ctx, `INSERT INTO public.uploads (object_key) VALUES ($1)`, k); err != nil {
			t.Fatal(err)
		}
	}
	env := e2eEnv(url)
	env["WORKER_JOBS"] = "sync-uploads"
	env["SYNC_MAX_BACKOFF"] = "400ms" // keep the bad keys coming back: every other tick
	for k, v := range map[string]string{"R2_ENDPOINT": info.Endpoint, "R2_REGION": info.Region,
		"R2_ACCESS_KEY_ID": info.AccessKeyID, "R2_SECRET_ACCESS_KEY": info.SecretAccessKey, "R2_BUCKET_NAME": info.Name} {
		env[k] = v
	}
	for _, id := range []string{"u1", "u2", "u3"} {
		startReplica(t, id, env)
	}
	var leader string
	poll(t, 30*time.Second, "a leader", func() bool {
		return db.QueryRow(ctx, `SELECT worker_id FROM worker_lock_holders WHERE job = 'sync-uploads'`).Scan(&leader) == nil
	})
	start := dbNow(t, db)
	for dbNow(t, db).Before(start.Add(5 * time.Second)) {
		var now string
		err := db.QueryRow(ctx, `SELECT worker_id FROM worker_lock_holders WHERE job = 'sync-uploads'`).Scan(&now)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		if now != leader {
			t.Fatalf("leadership moved from %s to %q", leader, now)
		}
		time.Sleep(100 * time.Millisecond) // sampling the holder, not waiting for a result
	}
	var runs, failed, checked int
	if err := db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'failed'),
		coalesce(sum((stats->>'checked')::int), 0) FROM job_runs WHERE job = 'sync-uploads' AND status <> 'skipped'`).Scan(&runs, &failed, &checked); err != nil {
		t.Fatal(err)
	}
	if runs < 10 || failed != 0 || checked < 8 {
		t.Errorf("%d runs, %d failed, %d uploads checked; want ≥ 10 runs, none failed, the bad keys checked repeatedly", runs, failed, checked)
	}
	var withError int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM upload_checks WHERE last_error IS NOT NULL AND check_count > 0`).Scan(&withError); err != nil {
		t.Fatal(err)
	}
	if withError < 2 {
		t.Errorf("%d uploads with last_error; want at least the empty and the over-long key", withError)
	}
}
