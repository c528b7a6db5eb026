package bucket

import (
	"context"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/faultproxy"
)

// While the bucket is down a run sends one probe, CheckBucket, which retries once at most
// (the tick after probes again); a HEAD keeps the client's full retries.
func TestCheckBucketRetriesOnce(t *testing.T) {
	t.Parallel()
	cfg, p := viaProxy(t, faultproxy.Config{})
	cfg.MaxAttempts, cfg.RetryBaseDelay, cfg.RetryMaxBackoff = 5, time.Millisecond, time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetFaults(faultproxy.Faults{Err503: 1}); err != nil {
		t.Fatal(err)
	}
	p.ResetStats()
	if err := c.CheckBucket(context.Background()); err == nil || !IsTransient(err) {
		t.Fatalf("CheckBucket against a down bucket: %v, want a transient error", err)
	}
	if n := p.Stats().Requests; n != checkBucketAttempts {
		t.Errorf("CheckBucket sent %d requests, want %d", n, checkBucketAttempts)
	}
	p.ResetStats()
	if _, err := c.Head(context.Background(), "some/key"); err == nil {
		t.Fatal("Head against a down bucket succeeded")
	}
	if n := p.Stats().Requests; n != 5 {
		t.Errorf("Head sent %d requests, want the client's 5 attempts", n)
	}
}
