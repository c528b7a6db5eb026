package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

// upload_checks_apply (through UploadMarkChecked) writes the application's row only while
// it is still PENDING: between the run's due page and its write the application may have
// resolved a row itself, and that row's status, size and state are left exactly as the
// application wrote them. A transient error (RETRY) never writes a status; it only backs
// the upload's next check off by its error count.
func TestUploadMarkCheckedOnlyWritesRowsStillPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.DatabaseURL(t)
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())

	keys := []string{"a/resolved-by-app-then-uploaded", "a/resolved-by-app-then-missing", "a/transient", "a/verified"}
	ids := map[string]string{}
	for _, k := range keys {
		var id string
		if err := db.QueryRow(ctx, `INSERT INTO public.uploads (object_key) VALUES ($1) RETURNING id::text`, k).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[k] = id
	}
	if n, err := st.UploadRegister(ctx, ""); err != nil || n != int64(len(keys)) {
		t.Fatalf("register: %d, %v; want %d", n, err, len(keys))
	}
	// The application resolves two rows itself after the worker listed them as due.
	if _, err := db.Exec(ctx, `UPDATE public.uploads SET status = 'FAILED' WHERE object_key = $1`, keys[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE public.uploads SET status = 'UPLOADED', size_bytes = 7 WHERE object_key = $1`, keys[1]); err != nil {
		t.Fatal(err)
	}

	from := time.Now().Truncate(time.Millisecond)
	changed, err := st.UploadMarkChecked(ctx, []store.UploadCheck{
		{ID: ids[keys[0]], Status: store.UploadUploaded, Size: 42, ETag: "e"},
		{ID: ids[keys[1]], Status: store.UploadPending, Reason: "missing"},
		{ID: ids[keys[2]], Status: store.UploadRetry, Reason: "503 SlowDown"},
		{ID: ids[keys[3]], Status: store.UploadUploaded, Size: 3},
	}, store.Backoff{From: from, Tick: time.Second, Max: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ids[keys[2]]: store.UploadRetry, ids[keys[3]]: store.UploadUploaded}
	if len(changed) != len(want) || changed[ids[keys[2]]] != want[ids[keys[2]]] || changed[ids[keys[3]]] != want[ids[keys[3]]] {
		t.Errorf("changed = %v; want only %v (rows the application resolved are not the worker's to write)", changed, want)
	}

	type row struct {
		status string
		size   *int64
		etag   *string
		ver    *time.Time
	}
	read := func(k string) row {
		t.Helper()
		var r row
		if err := db.QueryRow(ctx, `SELECT status, size_bytes, etag, verified_at FROM public.uploads WHERE object_key = $1`, k).
			Scan(&r.status, &r.size, &r.etag, &r.ver); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := read(keys[0]); r.status != "FAILED" || r.size != nil || r.etag != nil || r.ver != nil {
		t.Errorf("row the application set FAILED: %+v; want untouched (FAILED, no size, etag, verified_at)", r)
	}
	if r := read(keys[1]); r.status != "UPLOADED" || r.size == nil || *r.size != 7 {
		t.Errorf("row the application set UPLOADED: %+v; want untouched", r)
	}
	if r := read(keys[2]); r.status != "PENDING" || r.size != nil || r.ver != nil {
		t.Errorf("row with a transient error: %+v; want still PENDING, unwritten", r)
	}
	if r := read(keys[3]); r.status != "UPLOADED" || r.size == nil || *r.size != 3 || r.ver == nil {
		t.Errorf("verified row: %+v; want UPLOADED, size 3, verified_at set", r)
	}

	// The worker's state: untouched for the rows the application resolved.
	for _, k := range keys[:2] {
		s, err := st.UploadState(ctx, ids[k])
		if err != nil {
			t.Fatal(err)
		}
		if s.CheckCount != 0 || s.ErrorCount != 0 || s.ResolvedAt != nil || s.LastError != "" || s.Outcome != "" {
			t.Errorf("%s: state %+v; want untouched", k, s)
		}
	}
	s, err := st.UploadState(ctx, ids[keys[2]])
	if err != nil {
		t.Fatal(err)
	}
	if s.CheckCount != 0 || s.ErrorCount != 1 || s.ResolvedAt != nil || s.LastError != "503 SlowDown" || !s.NextCheckAt.Equal(from.Add(time.Second)) {
		t.Errorf("transient: state %+v; want 0 checks, 1 error, unresolved, next check one tick after %s", s, from)
	}
	if _, err := st.UploadState(ctx, "no-such-upload"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UploadState(unknown) = %v, want ErrNotFound", err)
	}
}
