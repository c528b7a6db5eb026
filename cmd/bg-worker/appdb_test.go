package main

import (
	"bytes"
	"context"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

// The commands on an application's own table (Prisma's "Upload": text ids, an enum
// status, camelCase columns), each run as the least-privileged role README gives it, and
// two real replicas verifying uploads as the replica role.
func TestCommandsOnApplicationTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	shape := testenv.AppShapes[0]
	d := testenv.NewAppDB(t, ctx, shape)
	info := testenv.Bucket(t)
	base := map[string]string{"HTTP_ADDR": "", "R2_ENDPOINT": info.Endpoint, "R2_REGION": info.Region,
		"R2_ACCESS_KEY_ID": info.AccessKeyID, "R2_SECRET_ACCESS_KEY": info.SecretAccessKey, "R2_BUCKET_NAME": info.Name}
	maps.Copy(base, shape.Env)
	cmd := func(url string, extra map[string]string, args ...string) (int, string, string) {
		t.Helper()
		env := maps.Clone(base)
		env["DATABASE_URL"] = url
		maps.Copy(env, extra)
		var stdout, stderr bytes.Buffer
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		code := exitCode(run(cctx, args, envOf(env), &stdout, &stderr), &stderr)
		return code, stdout.String(), stderr.String()
	}

	// A status value the enum lacks: exit 2, the variable named, nothing created.
	code, _, stderr := cmd(d.MigrateURL, map[string]string{"UPLOADS_STATUS_FAILED": "ERROR"}, "migrate")
	if code != exitUsage || !strings.Contains(stderr, `UPLOADS_STATUS_FAILED: "ERROR" is not a value of public."UploadStatus" (it has: "PENDING", "UPLOADED", "FAILED", "DELETED")`) {
		t.Fatalf("migrate with a wrong status value: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := cmd(d.MigrateURL, nil, "migrate"); code != exitOK {
		t.Fatalf("migrate: exit %d\n%s", code, stderr)
	}

	// check as the replica role, step by step through README's grants.
	code, stdout, _ := cmd(d.ReplicaURL, nil, "check")
	if code != exitUsage || !strings.Contains(stdout, "DATABASE_SCHEMA: this role has no USAGE on schema") {
		t.Errorf("check without USAGE on the schema: exit %d\n%s", code, stdout)
	}
	d.Exec(t, ctx, `GRANT USAGE ON SCHEMA bg_worker TO `+d.ReplicaRole)
	code, stdout, _ = cmd(d.ReplicaURL, nil, "check")
	for _, want := range []string{`PROBLEM  privilege: UPDATE ("status") on "public"."Upload"`,
		`CREATE INDEX CONCURRENTLY "Upload_bg_worker_pending_idx" ON "public"."Upload" ("id") WHERE "status" = 'PENDING'::public."UploadStatus";`,
		"ok       session advisory locks hold"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check before the table grant and the index lacks %q:\n%s", want, stdout)
		}
	}
	if code != exitFailed {
		t.Errorf("check with problems: exit %d, want 1", code)
	}
	d.Exec(t, ctx, `GRANT SELECT, UPDATE ("status", "sizeBytes", "updatedAt") ON public."Upload" TO `+d.ReplicaRole)
	d.Exec(t, ctx, `CREATE INDEX "Upload_bg_worker_pending_idx" ON "public"."Upload" ("id") WHERE "status" = 'PENDING'::public."UploadStatus"`)
	if code, stdout, _ := cmd(d.ReplicaURL, nil, "check"); code != exitOK || strings.Contains(stdout, "PROBLEM") {
		t.Errorf("check after README's grants and index: exit %d\n%s", code, stdout)
	}
	// On a current database migrate only reads: the replicas' role (no CREATE) can run it.
	if code, _, stderr := cmd(d.ReplicaURL, nil, "migrate"); code != exitOK {
		t.Errorf("migrate as the replica role on a current database: exit %d\n%s", code, stderr)
	}

	// Uploads, then two replicas as the replica role.
	client := testenv.S3Client(t, info)
	present := []string{"u/a.jpg", "u/b ü.jpg"}
	for _, k := range present {
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(info.Name), Key: aws.String(k),
			Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
		d.Insert(t, ctx, k, 0)
	}
	d.Insert(t, ctx, "u/missing.jpg", 0)
	renv := maps.Clone(base)
	renv["DATABASE_URL"] = d.ReplicaURL
	renv["WORKER_JOBS"] = "sync-uploads"
	renv["WORKER_INTERVAL_MS"] = "200"
	r1, r2 := startReplica(t, "app-r1", renv), startReplica(t, "app-r2", renv)
	poll(t, 60*time.Second, "present uploads UPLOADED in the application's table", func() bool {
		for _, k := range present {
			if testenv.Str(d.Read(t, ctx, k).Status) != shape.Uploaded {
				return false
			}
		}
		return true
	})
	if s := testenv.Str(d.Read(t, ctx, "u/missing.jpg").Status); s != shape.Pending {
		t.Errorf("missing upload: %s", s)
	}
	for _, p := range []*proc{r1, r2} {
		out := p.out.String()
		if !strings.Contains(out, "Uploads table table=public.Upload id=id key=objectKey status=status schema=bg_worker") ||
			strings.Contains(out, "lacks an index") {
			t.Errorf("%s start-up lines:\n%s", p.id, tail(out, 20))
		}
	}

	// status, as the replica role.
	code, stdout, stderr = cmd(d.ReplicaURL, nil, "status")
	if code != exitOK || !strings.Contains(stdout, "uploads: public.Upload (worker schema bg_worker): 1 PENDING") ||
		!strings.Contains(stdout, "sync-uploads") {
		t.Errorf("status: exit %d\n%s%s", code, stdout, stderr)
	}

	// A replica configured with another mapping refuses to start, naming the variable.
	other := maps.Clone(renv)
	other["UPLOADS_STATUS_FAILED"] = "DELETED"
	p := startReplica(t, "app-other", other)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if p.cmd.ProcessState.ExitCode() != exitUsage || !strings.Contains(p.out.String(), `UPLOADS_STATUS_FAILED: "DELETED" differs from "FAILED", which `+"`bg-worker migrate`"+` installed`) {
			t.Errorf("replica with another mapping: %v, exit %d\n%s", err, p.cmd.ProcessState.ExitCode(), p.out.String())
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		t.Errorf("a replica with another mapping kept running:\n%s", tail(p.out.String(), 20))
	}
	r1.stop(t)
	r2.stop(t)
}
