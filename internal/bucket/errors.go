package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

var (
	// ErrNotFound: the store answered 404 for the key (or the bucket is
	// missing: see CheckBucket).
	ErrNotFound = errors.New("object not found")
	// ErrNoSuchBucket: the bucket does not exist.
	ErrNoSuchBucket = errors.New("bucket does not exist")
	// ErrAccessDenied: the store rejected the credentials or their
	// permissions (HTTP 401/403, signature errors).
	ErrAccessDenied = errors.New("access denied")
	// ErrKeyRejected: the key itself cannot name an object in this store (empty, over
	// 1,024 bytes, not UTF-8, or a 400-class answer about the request for this key). It
	// is a definite answer about one upload, never about the bucket.
	ErrKeyRejected = errors.New("key rejected")
)

// MaxKeyBytes is the longest object key S3 and R2 accept.
const MaxKeyBytes = 1024

// invalidKey says why key cannot be sent, or "".
func invalidKey(key string) string {
	switch {
	case key == "":
		return "empty key"
	case len(key) > MaxKeyBytes:
		return fmt.Sprintf("key is %d bytes; object keys are at most %d", len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return "key is not valid UTF-8"
	}
	return ""
}

// keyRejectedCodes are answers about the request's key, not the bucket or credentials.
var keyRejectedCodes = map[string]bool{
	"InvalidArgument":   true,
	"KeyTooLongError":   true,
	"InvalidObjectName": true,
	"InvalidURI":        true,
	"InvalidKey":        true,
	"BadRequest":        true, // bodiless 400 on HEAD: code from the status text
}

// classifiedError carries a short message, the sentinel it matches and the
// SDK error underneath (still reachable with errors.As).
type classifiedError struct {
	msg   string
	kind  error
	cause error
}

func (e *classifiedError) Error() string   { return e.msg }
func (e *classifiedError) Unwrap() []error { return []error{e.kind, e.cause} }

var accessDeniedCodes = map[string]bool{
	"AccessDenied":                 true,
	"Forbidden":                    true, // bodiless 403 on HEAD: code from the status text
	"Unauthorized":                 true,
	"InvalidAccessKeyId":           true,
	"SignatureDoesNotMatch":        true,
	"InvalidToken":                 true,
	"ExpiredToken":                 true,
	"TokenRefreshRequired":         true,
	"AuthorizationHeaderMalformed": true, // wrong signing region (R2_REGION)
	"AllAccessDisabled":            true,
	"AccountProblem":               true,
	"InvalidSecurity":              true,
	"XAdminUserNotFound":           true, // versitygw, unknown access key (HTTP 404!)
}

var transientCodes = map[string]bool{
	"SlowDown":                true,
	"TooManyRequests":         true,
	"Throttling":              true,
	"ThrottlingException":     true,
	"RequestThrottled":        true,
	"RequestLimitExceeded":    true,
	"BandwidthLimitExceeded":  true,
	"ServiceUnavailable":      true,
	"InternalError":           true,
	"InternalServerError":     true,
	"RequestTimeout":          true,
	"RequestTimeoutException": true,
	"OperationAborted":        true,
	"BadGateway":              true,
	"GatewayTimeout":          true,
}

// httpStatus returns the HTTP status of an SDK response error, or 0.
func httpStatus(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// apiCode returns the S3 error code ("NoSuchKey", "SlowDown", ...), or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// classify turns an SDK error into the package's error kinds. key is the
// object key (head), the prefix (list) or "".
func classify(op, bucket, key string, err error) error {
	if err == nil {
		return nil
	}
	status, code := httpStatus(err), apiCode(err)
	var what string
	switch {
	case op == OpHead:
		what = fmt.Sprintf("bucket: %s %q in bucket %q", op, key, bucket)
	case op == OpList && key != "":
		what = fmt.Sprintf("bucket: %s prefix %q in bucket %q", op, key, bucket)
	default:
		what = fmt.Sprintf("bucket: %s %q", op, bucket)
	}
	detail := func() string {
		switch {
		case status != 0 && code != "":
			return fmt.Sprintf("HTTP %d %s", status, code)
		case status != 0:
			return fmt.Sprintf("HTTP %d", status)
		default:
			return code
		}
	}

	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden || accessDeniedCodes[code]:
		hint := "check R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY and the token's permissions on this bucket"
		if code == "AuthorizationHeaderMalformed" {
			hint = "check R2_REGION (R2 wants \"auto\")"
		}
		return &classifiedError{
			msg:   fmt.Sprintf("%s: access denied (%s): %s", what, detail(), hint),
			kind:  ErrAccessDenied,
			cause: err,
		}

	case code == "NoSuchBucket" || (op == OpHeadBucket && (status == http.StatusNotFound || code == "NotFound")):
		return &classifiedError{
			msg:   fmt.Sprintf("%s: bucket %q does not exist (%s): check R2_BUCKET_NAME and the endpoint", what, bucket, detail()),
			kind:  ErrNoSuchBucket,
			cause: err,
		}

	case isNotFound(err, code, status) && op == OpHead:
		return &classifiedError{
			msg:   fmt.Sprintf("%s: object not found", what),
			kind:  ErrNotFound,
			cause: err,
		}

	case op == OpHead && (keyRejectedCodes[code] || status == http.StatusBadRequest ||
		status == http.StatusRequestURITooLong || status == http.StatusMethodNotAllowed):
		// The message leaves the key out: it is stored with the upload (which has it) and
		// a key can be a kilobyte long.
		return &classifiedError{
			msg:   fmt.Sprintf("bucket: head: the store rejects this key (%s)", detail()),
			kind:  ErrKeyRejected,
			cause: err,
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isNotFound(err error, code string, status int) bool {
	var nf *types.NotFound
	var nsk *types.NoSuchKey
	return errors.As(err, &nf) || errors.As(err, &nsk) ||
		code == "NotFound" || code == "NoSuchKey" || status == http.StatusNotFound
}

// IsTransient reports whether err is a failure that says nothing about the
// object: a timeout, HTTP 5xx, 429 or SlowDown throttling, a reset, refused
// or truncated connection. Such errors reach the caller only after the
// client's retries are exhausted. NotFound, NoSuchBucket, access denied,
// other 4xx answers and a cancelled context are not transient (a context
// deadline is).
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoSuchBucket) || errors.Is(err, ErrAccessDenied) || errors.Is(err, ErrKeyRejected) {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var at *AttemptTimeoutError
	if errors.As(err, &at) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if code := apiCode(err); transientCodes[code] {
		return true
	}
	if status := httpStatus(err); status != 0 {
		return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
	}
	if (retry.RetryableConnectionError{}).IsErrorRetryable(err) == aws.TrueTernary {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"connection reset", "broken pipe", "unexpected EOF", "server closed idle connection", "retry quota exceeded"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
