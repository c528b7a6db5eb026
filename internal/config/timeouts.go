package config

import (
	"strings"
	"time"
)

// loadJobTimeouts reads JOB_TIMEOUTS: "job=duration[,job=duration…]", each job's longest
// run (default: the job's own, derived from its interval). Job names are checked against
// the registry where it is known (cmd/bg-worker), not here.
func loadJobTimeouts(env LookupEnv, c *Config, bad func(name, format string, args ...any)) {
	v, ok := env.value("JOB_TIMEOUTS")
	if !ok {
		return
	}
	c.JobTimeouts = map[string]time.Duration{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		job, ds, ok := strings.Cut(item, "=")
		job, ds = strings.TrimSpace(job), strings.TrimSpace(ds)
		if !ok || job == "" {
			bad("JOB_TIMEOUTS", "%q must be job=duration (e.g. sync-uploads=10m)", item)
			continue
		}
		d, err := time.ParseDuration(ds)
		switch {
		case err != nil:
			bad("JOB_TIMEOUTS", "%s: %q is not a duration (use Go durations such as 90s, 10m)", job, ds)
		case d < time.Second || d > MaxDuration:
			bad("JOB_TIMEOUTS", "%s: %s must be between 1s and %s", job, ds, MaxDuration)
		default:
			if _, dup := c.JobTimeouts[job]; dup {
				bad("JOB_TIMEOUTS", "%s is named twice", job)
			}
			c.JobTimeouts[job] = d
		}
	}
}
