package lock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var fast = lock.Options{Heartbeat: 100 * time.Millisecond, Timeout: 2 * time.Second}

func newSession(t *testing.T, url, name string, key lock.Key, opts lock.Options) *lock.Session {
	t.Helper()
	cfg, err := store.ParseConfig(url, name)
	if err != nil {
		t.Fatal(err)
	}
	s := lock.NewSession(cfg, key, opts)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func acquire(t *testing.T, s *lock.Session) *lock.Lease {
	t.Helper()
	l, _, err := s.TryAcquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return testenv.Poll(t, within, what, cond)
}

// Every replica of every release must derive the same key from a job's name: a key that
// changes between releases splits the fleet during a rolling deploy (old and new replicas
// each take "their" lock and both run the job). The values are pinned, not compared
// within one process: changing KeyFor (hash, folding, namespace) fails here.
func TestKeyForGoldenValues(t *testing.T) {
	t.Parallel()
	const ns = 0x62677772 // "bgwr": bg-worker's advisory-lock namespace (migrations.LockNamespace)
	golden := []struct {
		name string
		want lock.Key
	}{
		{"sync-uploads", lock.Key{Namespace: ns, ID: 1542840973}},
		{"scan-orphans", lock.Key{Namespace: ns, ID: 279060350}},
		{"prune-runs", lock.Key{Namespace: ns, ID: 1529937596}},
		{"a", lock.Key{Namespace: ns, ID: 1678518572}}, // FNV-1a("a") = 0xe40c292c, top bit cleared
		{"", lock.Key{Namespace: ns, ID: 18652613}},    // FNV-1a offset basis 0x811c9dc5, top bit cleared
		{"job-1", lock.Key{Namespace: ns, ID: 801270038}},
	}
	for _, g := range golden {
		if got := lock.KeyFor(g.name); got != g.want {
			t.Errorf("KeyFor(%q) = %v; want %v: a changed key splits a fleet during a rolling deploy", g.name, got, g.want)
		}
	}
	if got, want := lock.KeyFor("sync-uploads").String(), "(1650947954,1542840973)"; got != want {
		t.Errorf("Key.String() = %q; want %q (pg_locks classid, objid)", got, want)
	}
	if lock.KeyFor("scan-orphans") == lock.KeyFor("sync-uploads") {
		t.Error("distinct names share a key")
	}
	if err := lock.CheckCollisions([]string{"a", "b", "a"}); err != nil {
		t.Errorf("duplicate name is not a collision: %v", err)
	}
}

func TestExclusiveAndNotStacked(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	key := lock.KeyFor("t-exclusive")
	a := newSession(t, url, "a", key, fast)
	b := newSession(t, url, "b", key, fast)

	la := acquire(t, a)
	if la == nil {
		t.Fatal("a could not take a free lock")
	}
	if lb := acquire(t, b); lb != nil {
		t.Fatal("b took a lock a holds")
	}
	// Trying again while holding returns the same lease and does not stack the lock:
	// one release frees it for b.
	if again := acquire(t, a); again != la {
		t.Fatal("second TryAcquire returned a different lease")
	}
	if err := a.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-la.Done():
	default:
		t.Error("lease not ended by Release")
	}
	if lb := acquire(t, b); lb == nil {
		t.Fatal("b could not take the lock after a single release: it was stacked")
	}
	if err := b.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Release when nothing is held is a no-op.
	if err := b.Release(context.Background()); err != nil {
		t.Errorf("Release without lease: %v", err)
	}
}

// A terminated backend frees the lock at once; the holder learns within the heartbeat.
func TestTerminatedBackendEndsLease(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	key := lock.KeyFor("t-terminate")
	a := newSession(t, url, "a", key, fast)
	b := newSession(t, url, "b", key, fast)
	la := acquire(t, a)
	if la == nil {
		t.Fatal("no lease")
	}
	admin, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, la.PID); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, fast.ClientBound()+2*time.Second, "lease ends", func() bool { return la.Err() != nil })
	t.Logf("lease ended %s after pg_terminate_backend (heartbeat %s)", took, fast.Heartbeat)
	if !errors.Is(la.Err(), lock.ErrLockLost) {
		t.Errorf("lease error %v, want ErrLockLost", la.Err())
	}
	if lb := acquire(t, b); lb == nil {
		t.Fatal("b could not take the freed lock")
	}
	// a reconnects and finds the lock held elsewhere.
	if l := acquire(t, a); l != nil {
		t.Fatal("a took a lock b holds")
	}
}

// A holder that goes silent (a paused process: no heartbeats) loses the lock server-side
// after LOCK_TIMEOUT via idle_session_timeout, so the job does not stay hostage.
func TestSilentHolderFreedByServer(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	key := lock.KeyFor("t-silent")
	// A heartbeat far longer than the timeout stands in for a paused process.
	silent := lock.Options{Heartbeat: time.Hour, Timeout: 1500 * time.Millisecond}
	a := newSession(t, url, "a", key, silent)
	b := newSession(t, url, "b", key, fast)
	if acquire(t, a) == nil {
		t.Fatal("no lease")
	}
	start := time.Now()
	var lb *lock.Lease
	waitFor(t, 10*time.Second, "server frees a silent holder's lock", func() bool {
		lb = acquire(t, b)
		return lb != nil
	})
	t.Logf("silent holder's lock freed after %s (LOCK_TIMEOUT %s)", time.Since(start), silent.Timeout)
	if time.Since(start) < silent.Timeout/2 {
		t.Errorf("lock freed after %s, before the server-side bound", time.Since(start))
	}
}

// fencedRun holds job's lock on a session and claims a running run under it.
func fencedRun(t *testing.T, job string) (*store.Store, *lock.Session, *lock.Lease, store.Claim, lock.Fence) {
	t.Helper()
	ctx := context.Background()
	url := testenv.DatabaseURL(t)
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	key := lock.KeyFor(job)
	a := newSession(t, url, "a", key, fast)
	la := acquire(t, a)
	claim, err := st.ClaimTick(ctx, job, time.Hour, "a", store.StatusRunning, store.LockRef{Namespace: key.Namespace, Key: key.ID, PID: la.PID})
	if err != nil {
		t.Fatal(err)
	}
	return st, a, la, claim, lock.Fence{RunID: claim.RunID, Key: key, PID: la.PID}
}

func TestFence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, a, la, claim, f := fencedRun(t, "t-fence")
	key := f.Key
	if err := f.Check(ctx, st.DB()); err != nil {
		t.Fatalf("fence of a live run: %v", err)
	}
	// Wrong pid (another session's) fails.
	if err := (lock.Fence{RunID: claim.RunID, Key: key, PID: la.PID + 1}).Check(ctx, st.DB()); !errors.Is(err, lock.ErrLockLost) {
		t.Errorf("fence with a pid that holds nothing: %v", err)
	}
	// After the lock is gone the same fence fails.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(ctx, st.DB()); !errors.Is(err, lock.ErrLockLost) {
		t.Errorf("fence after release: %v, want ErrLockLost", err)
	}
	// An abandoned run fails even while its lock is held.
	la = acquire(t, a)
	f.PID = la.PID
	if err := f.Check(ctx, st.DB()); err != nil {
		t.Fatalf("fence re-held: %v", err)
	}
	if _, err := st.AbandonRun(ctx, claim.RunID, "test"); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(ctx, st.DB()); !errors.Is(err, lock.ErrLockLost) {
		t.Errorf("fence of an abandoned run: %v, want ErrLockLost", err)
	}
}

// A new leader's "mark abandoned" waits for a fenced transaction in flight, and the
// fenced transaction that started first commits; checks after the abandon fail.
func TestFenceSerializesWithAbandon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _, _, claim, f := fencedRun(t, "t-serial")
	tx, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before any Fatal (and after the store's Close, so it runs first): a
	// failing check must not leave the transaction open, or the abandon below stays
	// blocked on its row lock and the pool's Close waits for both forever. After a
	// commit the rollback is a no-op.
	var abandonDone chan struct{}
	t.Cleanup(func() {
		_ = tx.Rollback(context.Background())
		if abandonDone != nil {
			<-abandonDone // unblocked by the rollback
		}
	})
	if err := f.Check(ctx, tx); err != nil {
		t.Fatal(err)
	}
	abandoned := make(chan time.Time, 1)
	abandonDone = make(chan struct{})
	go func() {
		defer close(abandonDone)
		_, _ = st.AbandonRun(ctx, claim.RunID, "takeover")
		abandoned <- time.Now()
	}()
	// The abandon must be blocked on the run row's lock (not merely slow).
	waitFor(t, 10*time.Second, "abandon waits on the fenced row", func() bool {
		select {
		case <-abandoned:
			t.Fatal("abandon did not wait for the fenced transaction")
		default:
		}
		var n int
		if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%abandoned%' AND datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	committed := time.Now()
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if at := <-abandoned; at.Before(committed) {
		t.Error("abandon finished before the fenced transaction committed")
	}
	if err := f.Check(ctx, st.DB()); !errors.Is(err, lock.ErrLockLost) {
		t.Errorf("fence after abandon: %v", err)
	}
}

// Two names whose keys collide fail the check (names found by brute force: 31-bit keys
// collide after about 2^16 names).
func TestCheckCollisionsFindsRealCollision(t *testing.T) {
	t.Parallel()
	seen := map[lock.Key]string{}
	var a, b string
	for i := 0; a == ""; i++ {
		name := fmt.Sprintf("job-%d", i)
		k := lock.KeyFor(name)
		if other, ok := seen[k]; ok {
			a, b = other, name
		}
		seen[k] = name
	}
	err := lock.CheckCollisions([]string{"sync-uploads", a, b})
	if err == nil || !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) {
		t.Errorf("CheckCollisions(%q, %q) = %v, want an error naming both", a, b, err)
	}
}
