package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

// scrape returns w's /metrics as families (nil when it does not answer 200).
func (w *worker) scrape() map[string]*dto.MetricFamily {
	code, body := w.get("/metrics")
	if code != 200 {
		return nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		w.t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// gauge is the value of the gauge sample of name whose labels include want.
func gauge(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	fam, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if labelsMatch(m, want) && m.Gauge != nil {
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// TestStandbyReportsFreshness runs two real replicas of sync-uploads on one database: the
// standby's /metrics reports the leader (by worker id), the job's last success within one
// tick of what the leader's /metrics says, the same next tick window, runs in progress and
// the uploads backlog. After the leader is killed, the standby takes over and its own
// /metrics shows itself as leader and a newer last success.
func TestStandbyReportsFreshness(t *testing.T) {
	dbURL := testenv.DatabaseURL(t)
	b := testenv.Bucket(t)
	bin := e2eBinary(t)
	// 3 s ticks: longer than the collector's 2 s cache, so "within one tick" holds even when
	// one replica answers from its cache.
	const tick = 3.0
	env := []string{
		"DATABASE_URL=" + dbURL, "WORKER_JOBS=sync-uploads", "WORKER_INTERVAL_MS=3000",
		"R2_ENDPOINT=" + b.Endpoint, "R2_REGION=" + b.Region, "R2_BUCKET_NAME=" + b.Name,
		"R2_ACCESS_KEY_ID=" + b.AccessKeyID, "R2_SECRET_ACCESS_KEY=" + b.SecretAccessKey,
	}
	job := map[string]string{"job": "sync-uploads"}
	a := startWorker(t, bin, append(env, "WORKER_ID=replica-a")...)
	a.eventually("replica-a leads sync-uploads", 30*time.Second, func() (bool, string) {
		v, _ := gauge(a.scrape(), "bgworker_lock_held", job)
		return v == 1, fmt.Sprint(v)
	})
	s := startWorker(t, bin, append(env, "WORKER_ID=replica-b")...)
	s.eventually("replica-b /readyz 200", 30*time.Second, s.status("/readyz", 200))
	a.eventually("a succeeded run of sync-uploads, from the database", 30*time.Second, func() (bool, string) {
		_, ok := gauge(a.scrape(), "bgworker_last_success_timestamp_seconds", job)
		return ok, "no bgworker_last_success_timestamp_seconds yet"
	})

	for i := range 3 {
		if i > 0 {
			time.Sleep(1500 * time.Millisecond)
		}
		lf, sf := a.scrape(), s.scrape()
		lv, lok := gauge(lf, "bgworker_last_success_timestamp_seconds", job)
		sv, sok := gauge(sf, "bgworker_last_success_timestamp_seconds", job)
		if !lok || !sok {
			t.Fatalf("last success: leader %v (%v), standby %v (%v), want both", lv, lok, sv, sok)
		}
		if d := lv - sv; d > tick || d < -tick {
			t.Errorf("standby's last success %.3f is %.3fs from the leader's %.3f, want within one tick (%vs)", sv, d, lv, tick)
		}
		if age := float64(time.Now().UnixMilli())/1000 - sv; age > 3*tick || age < -1 {
			t.Errorf("standby's last success is %.1fs old, want within a few ticks", age)
		}
		ln, _ := gauge(lf, "bgworker_next_tick_timestamp_seconds", job)
		sn, _ := gauge(sf, "bgworker_next_tick_timestamp_seconds", job)
		if d := ln - sn; d > tick || d < -tick || ln == 0 {
			t.Errorf("next tick: leader %.3f, standby %.3f, want the same window", ln, sn)
		}
		if now := float64(time.Now().UnixMilli()) / 1000; sn < now-1 || sn > now+tick+1 {
			t.Errorf("standby's next tick %.3f is not within the next window (now %.3f)", sn, now)
		}
		if v, _ := gauge(sf, "bgworker_leader", map[string]string{"job": "sync-uploads", "worker_id": "replica-a"}); v != 1 {
			t.Errorf("standby's bgworker_leader{worker_id=replica-a} = %v, want 1", v)
		}
		if v, ok := gauge(sf, "bgworker_leader", map[string]string{"job": "sync-uploads", "worker_id": "replica-b"}); ok {
			t.Errorf("standby's bgworker_leader{worker_id=replica-b} = %v, want absent", v)
		}
		if v, ok := gauge(sf, "bgworker_lock_held", job); ok && v != 0 {
			t.Errorf("standby's bgworker_lock_held = %v, want 0", v)
		}
		for _, name := range []string{"bgworker_runs_in_progress", "bgworker_job_interval_seconds", "bgworker_job_paused"} {
			if _, ok := gauge(sf, name, job); !ok {
				t.Errorf("standby's /metrics lacks %s{job=sync-uploads}", name)
			}
		}
		if v, _ := gauge(sf, "bgworker_job_interval_seconds", job); v != tick {
			t.Errorf("bgworker_job_interval_seconds = %v, want %v", v, tick)
		}
		for _, name := range []string{"bgworker_uploads_pending", "bgworker_uploads_due"} {
			if _, ok := gauge(sf, name, nil); !ok {
				t.Errorf("standby's /metrics lacks %s", name)
			}
		}
		for _, q := range []string{"jobs", "uploads"} {
			if v, _ := gauge(sf, "bgworker_db_metrics_up", map[string]string{"query": q}); v != 1 {
				t.Errorf("standby's bgworker_db_metrics_up{query=%s} = %v, want 1", q, v)
			}
		}
	}
	before, _ := gauge(s.scrape(), "bgworker_last_success_timestamp_seconds", job)

	// The leader dies: the standby takes over, and reports itself and its own successes.
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	s.eventually("replica-b reported as leader by its own /metrics", 60*time.Second, func() (bool, string) {
		v, _ := gauge(s.scrape(), "bgworker_leader", map[string]string{"job": "sync-uploads", "worker_id": "replica-b"})
		return v == 1, fmt.Sprint(v)
	})
	s.eventually("a newer last success after the takeover", 30*time.Second, func() (bool, string) {
		v, _ := gauge(s.scrape(), "bgworker_last_success_timestamp_seconds", job)
		return v > before, fmt.Sprintf("%.3f, %.3f before", v, before)
	})
}
