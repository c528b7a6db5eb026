package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

// Replicas started together (docker compose up --scale bg-worker=3 on a fresh database)
// register the same jobs at the same moment: every one of them must succeed. Before the
// fix, about a third of such rounds failed one replica with a unique violation on
// worker_jobs (lock_namespace, lock_key), and that replica exited.
func TestRegisterJobConcurrently(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, testenv.DatabaseURL(t), store.Options{MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const rounds, replicas = 30, 4
	for round := range rounds {
		if _, err := st.DB().Exec(ctx, `DELETE FROM worker_jobs`); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		errs := make(chan error, replicas)
		var wg sync.WaitGroup
		for range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := st.RegisterJob(ctx, "concurrent-job", 7, 42, time.Second)
				errs <- err
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}
