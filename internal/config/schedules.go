package config

import (
	"time"

	"github.com/bg-worker/bg-worker/internal/schedule"
)

// loadSchedules reads ORPHAN_SCAN_SCHEDULE: a Go duration ("1h", like
// ORPHAN_SCAN_INTERVAL) or a cron expression with an optional zone
// ("TZ=Europe/Berlin 0 3 * * *"). It and ORPHAN_SCAN_INTERVAL are two spellings of one
// setting: setting both is an error.
func loadSchedules(env LookupEnv, c *Config, bad func(name, format string, args ...any)) {
	v, ok := env.value("ORPHAN_SCAN_SCHEDULE")
	if !ok {
		return
	}
	if _, both := env.value("ORPHAN_SCAN_INTERVAL"); both {
		bad("ORPHAN_SCAN_SCHEDULE", "set it or ORPHAN_SCAN_INTERVAL, not both")
		return
	}
	s, err := schedule.Parse(v)
	if err != nil {
		bad("ORPHAN_SCAN_SCHEDULE", "%v (a duration such as 1h, or a cron expression such as \"TZ=Europe/Berlin 0 3 * * *\")", err)
		return
	}
	if p := s.Period(); p < MinOrphanScanInterval {
		bad("ORPHAN_SCAN_SCHEDULE", "runs every %s; at least %s between scans (a scan lists the bucket)", p, MinOrphanScanInterval)
		return
	}
	if e, ok := s.(schedule.Every); ok {
		c.OrphanScanInterval = time.Duration(e)
		return
	}
	c.OrphanScanSchedule = s
}
