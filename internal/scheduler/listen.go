package scheduler

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// Channels of the `bg-worker once` protocol: the requester LISTENs on DoneChannel, then
// NOTIFYs RequestChannel with {"job","request_id"}; the job's current holder runs it
// (after any run in progress) with trigger=manual and request_id set, then NOTIFYs
// DoneChannel with the request id.
const (
	RequestChannel = "bg_worker_once"
	DoneChannel    = "bg_worker_once_done"
)

// ManualRequest is the payload on RequestChannel.
type ManualRequest struct {
	Job       string `json:"job"`
	RequestID string `json:"request_id"`
}

type manualRequest = ManualRequest

// listen receives manual-run requests on a dedicated session, reconnecting with backoff.
func (s *Scheduler) listen(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("Request listener reconnecting", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (s *Scheduler) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.opts.ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+RequestChannel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var req ManualRequest
		if err := json.Unmarshal([]byte(n.Payload), &req); err != nil || req.RequestID == "" {
			s.log.Warn("Ignoring malformed run request", "payload", n.Payload)
			continue
		}
		ch, ok := s.manual[req.Job]
		if !ok {
			continue // a job this replica does not run
		}
		select {
		case ch <- req:
		default:
			s.log.Warn("Too many queued run requests; dropping one", "job", req.Job, "request_id", req.RequestID)
		}
	}
}

func (s *Scheduler) notifyDone(ctx context.Context, requestID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.opts.Store.Notify(ctx, DoneChannel, requestID); err != nil {
		s.log.Warn("Could not announce the end of a requested run", "request_id", requestID, "error", err)
	}
}
