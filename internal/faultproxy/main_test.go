package faultproxy_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// testBucket creates a fresh bucket (testenv.Bucket) on the local versitygw
// and returns how to reach it; info.Dir is its directory, where files are
// objects. It skips (fails under CI=true) when the server is external (TEST_S3_ENDPOINT).
func testBucket(t testing.TB) testenv.BucketInfo {
	t.Helper()
	info := testenv.Bucket(t)
	if info.Dir == "" {
		// Under CI=true a test must run, not skip: a skipped guarantee test passes unseen.
		if os.Getenv("CI") == "true" {
			t.Fatal("needs the bucket's directory on disk (local versitygw), but TEST_S3_ENDPOINT is set; unset it under CI=true")
		}
		t.Skip("needs the bucket's directory on disk (local versitygw, not TEST_S3_ENDPOINT; set CI=true to fail instead)")
	}
	return info
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
