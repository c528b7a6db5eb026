package bucket

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go/middleware"
)

// newRetryer builds the standard retryer with: no client-wide retry quota, our
// own backoff, and 429/SlowDown (modeled or not) plus per-attempt timeouts
// added to what is retried.
func newRetryer(cfg Config) aws.Retryer {
	base, maxBackoff := cfg.RetryBaseDelay, cfg.RetryMaxBackoff
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = cfg.MaxAttempts
		o.MaxBackoff = maxBackoff
		o.RateLimiter = ratelimit.None
		o.Backoff = retry.BackoffDelayerFunc(func(attempt int, err error) (time.Duration, error) {
			return backoff(attempt, err, base, maxBackoff), nil
		})
		o.Retryables = append(o.Retryables, retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			if isThrottle(err) {
				return aws.TrueTernary
			}
			if code := apiCode(err); code == "InternalError" || code == "ServiceUnavailable" {
				return aws.TrueTernary
			}
			return aws.UnknownTernary
		}))
	})
}

// backoff is "full jitter": uniform in [0, min(base*2^(attempt-1), max)),
// with base ten times higher for throttling answers.
func backoff(attempt int, err error, base, maxBackoff time.Duration) time.Duration {
	if isThrottle(err) {
		base *= 10
	}
	d := base
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

func isThrottle(err error) bool {
	if httpStatus(err) == http.StatusTooManyRequests {
		return true
	}
	switch apiCode(err) {
	case "SlowDown", "TooManyRequests", "Throttling", "ThrottlingException", "RequestThrottled", "RequestLimitExceeded":
		return true
	}
	return false
}

// AttemptTimeoutError is the error of one attempt that did not finish within
// Config.RequestTimeout. It is retried; after the last attempt it is what the
// caller sees (wrapped), and IsTransient reports it transient.
type AttemptTimeoutError struct {
	After time.Duration // the RequestTimeout that expired
}

func (e *AttemptTimeoutError) Error() string {
	return fmt.Sprintf("attempt timed out after %s", e.After)
}

// Timeout marks the error as a timeout (net.Error style).
func (e *AttemptTimeoutError) Timeout() bool { return true }

// RetryableError tells the SDK's retryer to retry it.
func (e *AttemptTimeoutError) RetryableError() bool { return true }

// Unwrap makes errors.Is(err, context.DeadlineExceeded) true.
func (e *AttemptTimeoutError) Unwrap() error { return context.DeadlineExceeded }

var errAttemptTimeout = errors.New("bucket: attempt timeout")

// attemptTimeout gives each attempt (signing, sending, reading and decoding
// the response) its own deadline. It sits right after the retry middleware, so
// it runs once per attempt. The SDK turns a context that ends mid-request into
// a non-retryable CanceledError; when it was our per-attempt deadline (and
// not the caller's context), the error is replaced by a retryable
// AttemptTimeoutError.
//
// Cancelling when the attempt returns is safe because every operation this
// package uses decodes its whole response inside the attempt (no streaming
// bodies).
type attemptTimeout struct{ d time.Duration }

func (*attemptTimeout) ID() string { return "bgworker.AttemptTimeout" }

func (m *attemptTimeout) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
	middleware.FinalizeOutput, middleware.Metadata, error,
) {
	actx, cancel := context.WithTimeoutCause(ctx, m.d, errAttemptTimeout)
	defer cancel()
	out, md, err := next.HandleFinalize(actx, in)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(actx), errAttemptTimeout) {
		err = &AttemptTimeoutError{After: m.d}
	}
	return out, md, err
}

func addAttemptTimeout(d time.Duration) func(*middleware.Stack) error {
	return func(s *middleware.Stack) error {
		return s.Finalize.Insert(&attemptTimeout{d: d}, (&retry.Attempt{}).ID(), middleware.After)
	}
}
