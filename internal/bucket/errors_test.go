package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// respErr builds the error shape the SDK returns for an HTTP error answer.
func respErr(status int, apiErr error) error {
	if apiErr == nil {
		apiErr = errors.New("no body")
	}
	return &smithy.OperationError{ServiceID: "S3", OperationName: "HeadObject", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: apiErr},
	}}
}

func generic(code string) error { return &smithy.GenericAPIError{Code: code, Message: code} }

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		op   string
		err  error
		want error // sentinel, or nil for none
	}{
		{"types.NotFound", OpHead, respErr(404, &types.NotFound{}), ErrNotFound},
		{"types.NoSuchKey", OpHead, respErr(404, &types.NoSuchKey{}), ErrNotFound},
		{"code NoSuchKey without status", OpHead, generic("NoSuchKey"), ErrNotFound},
		{"bare 404", OpHead, respErr(404, nil), ErrNotFound},
		{"403 Forbidden on head", OpHead, respErr(403, generic("Forbidden")), ErrAccessDenied},
		{"bare 403 on head", OpHead, respErr(403, nil), ErrAccessDenied},
		{"401", OpHead, respErr(401, nil), ErrAccessDenied},
		{"SignatureDoesNotMatch", OpList, respErr(403, generic("SignatureDoesNotMatch")), ErrAccessDenied},
		{"wrong region", OpList, respErr(400, generic("AuthorizationHeaderMalformed")), ErrAccessDenied},
		{"versitygw unknown key", OpList, respErr(404, generic("XAdminUserNotFound")), ErrAccessDenied},
		{"NoSuchBucket on list", OpList, respErr(404, generic("NoSuchBucket")), ErrNoSuchBucket},
		{"NoSuchBucket on head", OpHead, respErr(404, generic("NoSuchBucket")), ErrNoSuchBucket},
		{"404 on head_bucket", OpHeadBucket, respErr(404, generic("NotFound")), ErrNoSuchBucket},
		{"404 on list is not NotFound", OpList, respErr(404, generic("Weird")), nil},
		{"500", OpHead, respErr(500, nil), nil},
		{"400", OpHead, respErr(400, generic("InvalidArgument")), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := classify(tt.op, "bkt", "key", tt.err)
			for _, s := range []error{ErrNotFound, ErrNoSuchBucket, ErrAccessDenied} {
				if errors.Is(err, s) != (s == tt.want) {
					t.Fatalf("classify(%v) = %v; Is(%v) = %v", tt.err, err, s, errors.Is(err, s))
				}
			}
			// The SDK error stays reachable.
			var oe *smithy.OperationError
			if !errors.As(err, &oe) && tt.name != "code NoSuchKey without status" {
				t.Fatalf("cause lost: %v", err)
			}
		})
	}
	if classify(OpHead, "b", "k", nil) != nil {
		t.Fatal("nil not nil")
	}
}

func TestIsTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"500", respErr(500, generic("InternalError")), true},
		{"bare 502", respErr(502, nil), true},
		{"503 SlowDown", respErr(503, generic("SlowDown")), true},
		{"bare 429", respErr(429, nil), true},
		{"SlowDown without status", generic("SlowDown"), true},
		{"400 RequestTimeout", respErr(400, generic("RequestTimeout")), true},
		{"408", respErr(408, nil), true},
		{"404", respErr(404, nil), false},
		{"403", respErr(403, nil), false},
		{"400", respErr(400, generic("InvalidArgument")), false},
		{"409", respErr(409, generic("OperationAborted")), true},
		{"classified NotFound", classify(OpHead, "b", "k", respErr(404, nil)), false},
		{"classified NoSuchBucket", classify(OpHeadBucket, "b", "", respErr(404, nil)), false},
		{"classified AccessDenied", classify(OpHead, "b", "k", respErr(403, nil)), false},
		{"classified 503", classify(OpHead, "b", "k", respErr(503, nil)), true},
		{"attempt timeout", fmt.Errorf("op: %w", &AttemptTimeoutError{After: time.Second}), true},
		{"context deadline", &smithy.CanceledError{Err: context.DeadlineExceeded}, true},
		{"context canceled", &smithy.CanceledError{Err: context.Canceled}, false},
		{"connection reset", &smithyhttp.RequestSendError{Err: &url.Error{Op: "Head", URL: "u", Err: &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}}, true},
		{"connection refused", &url.Error{Op: "Head", URL: "u", Err: &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}, true},
		{"EOF", fmt.Errorf("x: %w", io.EOF), true},
		{"unexpected EOF", fmt.Errorf("decode: %w", io.ErrUnexpectedEOF), true},
		{"net timeout", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, true},
		{"dns not found", &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, false},
		{"plain error", errors.New("something"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsTransient(tt.err); got != tt.want {
				t.Fatalf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	base, maxB := 100*time.Millisecond, 2*time.Second
	for attempt := 1; attempt <= 10; attempt++ {
		for range 100 {
			d := backoff(attempt, respErr(500, nil), base, maxB)
			limit := min(base<<(attempt-1), maxB)
			if d < 0 || d >= limit {
				t.Fatalf("attempt %d: %v not in [0,%v)", attempt, d, limit)
			}
			if d := backoff(attempt, respErr(429, nil), base, maxB); d >= min(10*base<<(attempt-1), maxB) {
				t.Fatalf("throttle attempt %d: %v", attempt, d)
			}
		}
	}
}

func TestUnquoteETag(t *testing.T) {
	for in, want := range map[string]string{`"abc"`: "abc", `W/"abc"`: "abc", "abc": "abc", "": "", `"`: `"`, `"abc-3"`: "abc-3"} {
		if got := unquoteETag(in); got != want {
			t.Errorf("unquoteETag(%q) = %q, want %q", in, got, want)
		}
	}
}

// A store's refusal of one key (SPEC guarantee 6: an answer about one item belongs to that
// item) is ErrKeyRejected on HEAD only, never transient, and never a bucket-level sentinel;
// the same statuses on other operations are not about a key.
func TestClassifyKeyRejected(t *testing.T) {
	tests := []struct {
		name     string
		op       string
		err      error
		rejected bool
	}{
		{"400 InvalidArgument on head", OpHead, respErr(400, generic("InvalidArgument")), true},
		{"bare 400 on head", OpHead, respErr(400, nil), true},
		{"KeyTooLongError on head", OpHead, respErr(400, generic("KeyTooLongError")), true},
		{"414 on head", OpHead, respErr(414, nil), true},
		{"405 on head", OpHead, respErr(405, nil), true},
		{"400 on list", OpList, respErr(400, generic("InvalidArgument")), false},
		{"400 on head_bucket", OpHeadBucket, respErr(400, nil), false},
		{"403 on head stays access denied", OpHead, respErr(403, nil), false},
		{"404 on head stays not found", OpHead, respErr(404, nil), false},
		{"503 on head stays transient", OpHead, respErr(503, nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := classify(tt.op, "bkt", "key", tt.err)
			if errors.Is(err, ErrKeyRejected) != tt.rejected {
				t.Fatalf("classify(%v) = %v; Is(ErrKeyRejected) = %v, want %v", tt.err, err, !tt.rejected, tt.rejected)
			}
			if !tt.rejected {
				return
			}
			if IsTransient(err) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoSuchBucket) || errors.Is(err, ErrAccessDenied) {
				t.Fatalf("key rejection %v is also transient or a bucket/object sentinel", err)
			}
			if strings.Contains(err.Error(), "key\"") || strings.Contains(err.Error(), "\"key") {
				t.Fatalf("message %q quotes the key (it is stored with the upload, and may be 1 KiB)", err)
			}
		})
	}
}
