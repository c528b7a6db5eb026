// Package schedule says when a job's tick windows start: every interval (windows aligned
// to the Unix epoch, as before) or at the instants of a cron expression in a time zone.
//
// A window runs from one instant to the next; the scheduler claims each window at most
// once (job_runs' unique (job, tick_at)), so the instants are the contract. Daylight-
// saving changes are resolved here, once, for every caller:
//
//   - When clocks go back, wall-clock times of the repeated hour occur twice. An instant
//     whose wall-clock time is not later than the previous instant's is not a new
//     window: "0 2 * * *" runs once on that night, "*/15 * * * *" runs 02:00…02:45 once.
//   - When clocks go forward, wall-clock times in the skipped hour do not exist. A
//     schedule that names one (e.g. "30 2 * * *" in Europe/Berlin on the last Sunday of
//     March) runs at the first instant after the change (03:00) instead of silently
//     skipping the day.
//
// Cron expressions use github.com/robfig/cron/v3's standard five fields (minute hour
// day-of-month month day-of-week, names and @daily-style descriptors allowed), or six
// with a leading seconds field; the zone is given apart (ORPHAN_SCAN_SCHEDULE's
// "TZ=Europe/Berlin 0 3 * * *", or Cron's tz argument).
package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule yields a job's windows.
type Schedule interface {
	// Window returns the window containing t: its start (≤ t) and the next one's start.
	Window(t time.Time) (start, next time.Time)
	// Period is the typical time between windows (for defaults such as the timeout).
	Period() time.Duration
	// String is the schedule as configured ("every 5s", "0 3 * * * Europe/Berlin").
	String() string
}

// Every is windows of a fixed length, aligned to the Unix epoch:
// to_timestamp(floor(epoch_ms / interval_ms) * interval_ms / 1000).
type Every time.Duration

// Window implements Schedule.
func (e Every) Window(t time.Time) (time.Time, time.Time) {
	iv := time.Duration(e).Milliseconds()
	ms := t.UnixMilli()
	start := ms - ((ms%iv)+iv)%iv // floor for negative times too
	return time.UnixMilli(start).UTC(), time.UnixMilli(start + iv).UTC()
}

// Period implements Schedule.
func (e Every) Period() time.Duration { return time.Duration(e) }

func (e Every) String() string { return "every " + time.Duration(e).String() }

// Cron is a cron expression's instants in a time zone.
type Cron struct {
	expr string
	loc  *time.Location
	spec cron.Schedule // in loc
	wall cron.Schedule // the same fields on naive wall-clock time (UTC)
}

var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses expr in zone tz ("" = UTC).
func ParseCron(expr, tz string) (*Cron, error) {
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, errors.New("give the time zone apart, not as a TZ= prefix")
	}
	loc := time.UTC
	if tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("time zone %q: %w", tz, err)
		}
		loc = l
	}
	spec, err := parser.Parse("CRON_TZ=" + loc.String() + " " + expr)
	if err != nil {
		return nil, fmt.Errorf("cron expression %q: %w", expr, err)
	}
	wall, err := parser.Parse("CRON_TZ=UTC " + expr)
	if err != nil {
		return nil, fmt.Errorf("cron expression %q: %w", expr, err)
	}
	c := &Cron{expr: expr, loc: loc, spec: spec, wall: wall}
	if c.spec.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("cron expression %q never fires", expr)
	}
	return c, nil
}

// Parse reads "every D", a Go duration ("5s"), or "[TZ=Zone ]cron expression".
func Parse(s string) (Schedule, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(strings.TrimPrefix(s, "every ")); err == nil {
		if d < time.Millisecond {
			return nil, fmt.Errorf("interval %s is shorter than 1ms", d)
		}
		return Every(d), nil
	}
	tz := ""
	if rest, ok := strings.CutPrefix(s, "TZ="); ok {
		zone, expr, found := strings.Cut(rest, " ")
		if !found {
			return nil, fmt.Errorf("%q: TZ=Zone must be followed by a cron expression", s)
		}
		tz, s = zone, expr
	}
	return ParseCron(s, tz)
}

func (c *Cron) String() string {
	if c.loc == time.UTC {
		return c.expr + " UTC"
	}
	return c.expr + " " + c.loc.String()
}

// Location is the schedule's time zone.
func (c *Cron) Location() *time.Location { return c.loc }

// naive is t's wall-clock reading in loc, as a UTC time (comparable across offsets).
func naive(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// Next returns the first instant strictly after after, DST rules applied (package doc).
func (c *Cron) Next(after time.Time) time.Time {
	n := c.spec.Next(after)
	// Clocks went back: skip instants whose wall-clock time already passed.
	for !n.IsZero() && !naive(n, c.loc).After(naive(after, c.loc)) {
		n = c.spec.Next(n)
	}
	if n.IsZero() {
		return n
	}
	// Clocks went forward between after and n: a wall-clock time in the gap that the
	// expression names runs at the end of the gap.
	if g, ok := c.gapInstant(after, n); ok {
		return g
	}
	return n
}

// gapInstant finds a forward change in (after, n] whose skipped wall-clock times the
// expression names, and returns the instant the change happens. It visits only the
// zone's transitions (time.Time.ZoneBounds): none at all in UTC or a fixed zone.
func (c *Cron) gapInstant(after, n time.Time) (time.Time, bool) {
	for u := after; ; {
		_, ou := u.In(c.loc).Zone()
		_, change := u.In(c.loc).ZoneBounds()
		if change.IsZero() || change.After(n) {
			return time.Time{}, false
		}
		if _, ov := change.In(c.loc).Zone(); ov > ou {
			gapEnd := naive(change, c.loc)
			gapStart := gapEnd.Add(-time.Duration(ov-ou) * time.Second)
			if w := c.wall.Next(gapStart.Add(-time.Second)); !w.IsZero() && w.Before(gapEnd) {
				return change, true
			}
		}
		u = change
	}
}

// Window implements Schedule.
func (c *Cron) Window(t time.Time) (time.Time, time.Time) {
	// Start far enough back that the first instant is at or before t, then walk forward.
	for back := time.Second; back <= 8*366*24*time.Hour; back *= 2 {
		cur := c.Next(t.Add(-back))
		if cur.IsZero() {
			return time.Time{}, time.Time{}
		}
		if cur.After(t) {
			continue
		}
		for {
			nx := c.Next(cur)
			if nx.IsZero() || nx.After(t) {
				return cur, nx
			}
			cur = nx
		}
	}
	return time.Time{}, time.Time{}
}

// Period implements Schedule: the gap between the next two instants.
func (c *Cron) Period() time.Duration {
	a := c.Next(time.Now())
	b := c.Next(a)
	if a.IsZero() || b.IsZero() {
		return 24 * time.Hour
	}
	return b.Sub(a)
}
