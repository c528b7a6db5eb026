//go:build !e2e

package main

import "github.com/bg-worker/bg-worker/internal/jobs"

func extraJobs(jobs.Deps) []jobs.Job { return nil }
