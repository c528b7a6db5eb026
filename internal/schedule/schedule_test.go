package schedule

import (
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// instants lists the schedule's instants from after (exclusive) until until.
func instants(c *Cron, after, until time.Time) []time.Time {
	var out []time.Time
	for t := c.Next(after); !t.IsZero() && !t.After(until); t = c.Next(t) {
		out = append(out, t)
	}
	return out
}

func TestCronDaylightSaving(t *testing.T) {
	t.Parallel()
	// Europe/Berlin 2027: clocks go forward on 28 March at 02:00 CET (01:00Z) and back
	// on 31 October at 03:00 CEST (01:00Z).
	cases := []struct {
		name         string
		expr         string
		after, until string
		want         []string
	}{
		{"daily across spring forward: once a day", "0 3 * * *", "2027-03-26T12:00:00Z", "2027-03-29T12:00:00Z",
			[]string{"2027-03-27T02:00:00Z", "2027-03-28T01:00:00Z", "2027-03-29T01:00:00Z"}},
		{"a time the change skips runs when the change happens", "30 2 * * *", "2027-03-26T12:00:00Z", "2027-03-29T12:00:00Z",
			[]string{"2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"}},
		{"half-hourly across spring forward", "*/30 * * * *", "2027-03-28T00:15:00Z", "2027-03-28T01:45:00Z",
			[]string{"2027-03-28T00:30:00Z", "2027-03-28T01:00:00Z", "2027-03-28T01:30:00Z"}},
		{"the repeated hour does not run twice", "0 2 * * *", "2027-10-29T12:00:00Z", "2027-11-01T12:00:00Z",
			[]string{"2027-10-30T00:00:00Z", "2027-10-31T00:00:00Z", "2027-11-01T01:00:00Z"}},
		{"half-hourly across fall back: the repeated hour once", "*/30 * * * *", "2027-10-30T23:45:00Z", "2027-10-31T02:45:00Z",
			[]string{"2027-10-31T00:00:00Z", "2027-10-31T00:30:00Z", "2027-10-31T02:00:00Z", "2027-10-31T02:30:00Z"}},
		{"daily across fall back", "0 3 * * *", "2027-10-30T12:00:00Z", "2027-11-01T12:00:00Z",
			[]string{"2027-10-31T02:00:00Z", "2027-11-01T02:00:00Z"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseCron(tc.expr, "Europe/Berlin")
			if err != nil {
				t.Fatal(err)
			}
			got := instants(c, utc(tc.after), utc(tc.until))
			if len(got) != len(tc.want) {
				t.Fatalf("instants %v\nwant %v", got, tc.want)
			}
			for i := range got {
				if !got[i].Equal(utc(tc.want[i])) {
					t.Fatalf("instant %d = %s, want %s (all: %v)", i, got[i], tc.want[i], got)
				}
			}
			// Window agrees with Next at every instant and between them: no window is
			// claimed twice, none is skipped.
			for i, start := range got {
				for _, probe := range []time.Time{start, start.Add(time.Second)} {
					s, n := c.Window(probe)
					if !s.Equal(start) {
						t.Errorf("Window(%s) start %s, want %s", probe, s, start)
					}
					if i+1 < len(got) && !n.Equal(got[i+1]) {
						t.Errorf("Window(%s) next %s, want %s", probe, n, got[i+1])
					}
				}
			}
		})
	}
}

func TestEveryWindow(t *testing.T) {
	t.Parallel()
	e := Every(5 * time.Second)
	s, n := e.Window(utc("2027-01-01T00:00:07Z"))
	if !s.Equal(utc("2027-01-01T00:00:05Z")) || !n.Equal(utc("2027-01-01T00:00:10Z")) {
		t.Fatalf("Window = %s, %s", s, n)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want string
		bad  bool
	}{
		{"1h", "every 1h0m0s", false},
		{"every 90s", "every 1m30s", false},
		{"0 3 * * *", "0 3 * * * UTC", false},
		{"TZ=Europe/Berlin 0 3 * * *", "0 3 * * * Europe/Berlin", false},
		{"@daily", "@daily UTC", false},
		{"*/1 * * * * *", "*/1 * * * * * UTC", false},
		{"TZ=Mars/Olympus 0 3 * * *", "", true},
		{"61 * * * *", "", true},
		{"TZ=Europe/Berlin", "", true},
		{"500us", "", true},
	} {
		s, err := Parse(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tc.in, s)
			}
			continue
		}
		if err != nil || s.String() != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %s", tc.in, s, err, tc.want)
		}
	}
}

// Window runs on every leader wake-up and every metrics scrape: it must stay cheap for a
// daily schedule in a zone with daylight saving.
func BenchmarkCronWindow(b *testing.B) {
	for _, tz := range []string{"UTC", "Europe/Berlin"} {
		b.Run(tz, func(b *testing.B) {
			c, err := ParseCron("0 3 * * *", tz)
			if err != nil {
				b.Fatal(err)
			}
			t := utc("2027-03-27T12:00:00Z")
			for b.Loop() {
				c.Window(t)
			}
		})
	}
}
