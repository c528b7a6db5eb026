package jobs

import "time"

// SyncUploadsSized is sync-uploads with test-sized keyset pages, write batches and flush
// period (the defaults are syncPageSize, syncBatchSize and syncFlushEvery).
func SyncUploadsSized(d Deps, pageSize, batchSize int, flushEvery time.Duration) Job {
	j := newSyncUploads(d)
	s := newSyncUploadsJob(d)
	s.pageSize, s.batchSize, s.flushEvery = pageSize, batchSize, flushEvery
	j.Run = s.run
	return j
}

// SyncUploadsStallAfter is sync-uploads whose stall watch fires after limit.
func SyncUploadsStallAfter(d Deps, limit time.Duration) Job {
	j := newSyncUploads(d)
	s := newSyncUploadsJob(d)
	s.stallLimit = limit
	j.Run = s.run
	return j
}
