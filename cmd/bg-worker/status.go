package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/store"
)

// statusRun is a run as job_runs records it.
type statusRun = store.JobRun

// statusPause is a job's fleet-wide pause.
type statusPause struct {
	Until  *time.Time `json:"until,omitempty"` // absent: until resumed
	Since  *time.Time `json:"since,omitempty"`
	By     string     `json:"by"`
	Reason string     `json:"reason,omitempty"`
}

type statusJob struct {
	Name       string            `json:"name"`
	IntervalMS int64             `json:"interval_ms"`
	Schedule   string            `json:"schedule,omitempty"` // as this binary configures it
	Paused     *statusPause      `json:"paused,omitempty"`
	LockKey    [2]int32          `json:"lock_key"`
	Holder     *store.LockHolder `json:"holder"`
	NextTick   time.Time         `json:"next_tick"`
	Runs       []statusRun       `json:"recent_runs"`
}

// statusUploads is the application's uploads table as the worker sees it.
type statusUploads struct {
	Schema  string `json:"schema"` // the worker's schema
	Table   string `json:"table"`
	Pending int64  `json:"pending"`
	Due     int64  `json:"due"`
}

type statusReport struct {
	Now     time.Time      `json:"now"`
	Uploads *statusUploads `json:"uploads,omitempty"`
	Jobs    []statusJob    `json:"jobs"`
}

func cmdStatus(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	n := fs.Int("runs", 5, "recent runs to show per job")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, st, err := commandStore(ctx, env, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	rep, err := buildStatus(ctx, st, cfg, *n)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printStatus(stdout, rep)
	return nil
}

func buildStatus(ctx context.Context, st *store.Store, cfg config.Config, n int) (statusReport, error) {
	if err := schemaReady(ctx, st); err != nil {
		return statusReport{}, err
	}
	now, err := st.Now(ctx)
	if err != nil {
		return statusReport{}, err
	}
	recorded, err := st.ListJobs(ctx)
	if err != nil {
		return statusReport{}, err
	}
	holders, err := st.LockHolders(ctx)
	if err != nil {
		return statusReport{}, err
	}
	byJob := map[string]store.LockHolder{}
	for _, h := range holders {
		byJob[h.Job] = h
	}
	rep := statusReport{Now: now, Jobs: []statusJob{}}
	local := map[string]jobs.Job{}
	for _, j := range registry(jobs.Deps{Config: cfg}) {
		local[j.Name] = j
	}
	// The mapping must be the installed one for the counts to mean anything.
	if _, err := st.CheckMapping(ctx, cfg.Uploads); err != nil {
		return rep, mappingError(err)
	}
	due, err := st.UploadDueSummary(ctx, cfg.R2Prefix)
	if err != nil {
		return rep, err
	}
	rep.Uploads = &statusUploads{Schema: cfg.Schema(), Table: cfg.Uploads.QualifiedTable(), Pending: due.Pending, Due: due.Due}
	seen := map[string]bool{}
	add := func(name string, interval time.Duration, ns, key int32, pause *statusPause) error {
		seen[name] = true
		j := statusJob{Name: name, IntervalMS: interval.Milliseconds(), LockKey: [2]int32{ns, key}, Runs: []statusRun{}, Paused: pause}
		if h, ok := byJob[name]; ok {
			j.Holder = &h
		}
		iv := interval.Milliseconds()
		j.NextTick = time.UnixMilli((now.UnixMilli()/iv + 1) * iv).UTC()
		if lj, ok := local[name]; ok {
			j.Schedule = lj.Windows().String()
			if _, next := lj.Windows().Window(now); !next.IsZero() {
				j.NextTick = next.UTC() // a calendar schedule's next instant
			}
		}
		runs, err := st.RecentRuns(ctx, name, n)
		if err != nil {
			return err
		}
		j.Runs = append(j.Runs, runs...)
		rep.Jobs = append(rep.Jobs, j)
		return nil
	}
	for _, r := range recorded {
		var pause *statusPause
		if r.Paused {
			pause = &statusPause{Since: r.PausedAt, Until: r.PausedUntil, By: r.PausedBy, Reason: r.PausedReason}
		}
		if err := add(r.Name, r.Interval, r.LockNamespace, r.LockKey, pause); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func printStatus(w io.Writer, rep statusReport) {
	if u := rep.Uploads; u != nil {
		fmt.Fprintf(w, "uploads: %s (worker schema %s): %d PENDING, %d due now\n\n", u.Table, u.Schema, u.Pending, u.Due)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tINTERVAL\tLEADER\tPID\tHELD SINCE\tRUNNING SINCE\tNEXT TICK\tPAUSED")
	for _, j := range rep.Jobs {
		leader, pid, since, running := "-", "-", "-", "-"
		if h := j.Holder; h != nil {
			leader, pid = h.WorkerID, fmt.Sprint(h.PID)
			if h.HeldSince != nil {
				since = fmtTime(*h.HeldSince)
			}
			if h.RunningSince != nil {
				running = fmtTime(*h.RunningSince)
			}
		}
		paused := "-"
		if p := j.Paused; p != nil {
			paused = "by " + p.By
			if p.Until != nil {
				paused += " until " + fmtTime(*p.Until)
			} else {
				paused += " until resumed"
			}
			if p.Reason != "" {
				paused += fmt.Sprintf(" (%s)", p.Reason)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s (in %s)\t%s\n", j.Name, time.Duration(j.IntervalMS)*time.Millisecond,
			leader, pid, since, running, fmtTime(j.NextTick), j.NextTick.Sub(rep.Now).Round(time.Millisecond), paused)
	}
	tw.Flush()
	for _, j := range rep.Jobs {
		fmt.Fprintf(w, "\n[%s] last runs:\n", j.Name)
		if len(j.Runs) == 0 {
			fmt.Fprintln(w, "  (none)")
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tTICK\tTRIGGER\tWORKER\tSTATUS\tDURATION\tSTATS / ERROR")
		for _, r := range j.Runs {
			dur := "-"
			if r.FinishedAt != nil {
				dur = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
			}
			detail := string(r.Stats)
			if r.Error != "" {
				detail = r.Error
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, fmtTime(r.TickAt), r.Trigger, r.WorkerID, r.Status, dur, detail)
		}
		tw.Flush()
	}
}

func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
