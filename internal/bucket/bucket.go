package bucket

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Defaults applied by New when a Config field is zero.
const (
	DefaultRegion          = "auto"
	DefaultRequestTimeout  = 10 * time.Second
	DefaultMaxAttempts     = 5
	DefaultMaxConcurrency  = 32
	DefaultRetryBaseDelay  = 100 * time.Millisecond
	DefaultRetryMaxBackoff = 5 * time.Second

	// MaxDeleteKeys is the most keys one Delete call (one DeleteObjects
	// request) accepts.
	MaxDeleteKeys = 1000
)

// Operation names passed to Config.Observer.
const (
	OpHead       = "head"
	OpHeadBucket = "head_bucket"
	OpList       = "list"
	OpDelete     = "delete"
)

// Outcomes passed to Config.Observer.
const (
	OutcomeOK       = "ok"
	OutcomeNotFound = "not_found"
	OutcomeError    = "error"
)

// Config configures a Client. The environment variable each field usually
// comes from is named in its comment; New's errors name it too.
type Config struct {
	// AccountID (R2_ACCOUNT_ID) forms the R2 endpoint
	// https://<id>.r2.cloudflarestorage.com (virtual-hosted addressing).
	AccountID string
	// Endpoint (R2_ENDPOINT) is any S3-compatible base URL, e.g.
	// http://127.0.0.1:7070. It overrides AccountID and is addressed
	// path-style.
	Endpoint string
	// Region (R2_REGION) is the signing region. Default "auto".
	Region string
	// AccessKeyID (R2_ACCESS_KEY_ID), SecretAccessKey (R2_SECRET_ACCESS_KEY)
	// and Bucket (R2_BUCKET_NAME) are required.
	AccessKeyID     string
	SecretAccessKey string
	Bucket          string

	// MaxConcurrency is the caller's expected fan-out (SYNC_CONCURRENCY).
	// It sizes the idle-connection pool. Default 32.
	MaxConcurrency int
	// RequestTimeout bounds each attempt (not the whole retried request).
	// Default 10s.
	RequestTimeout time.Duration
	// MaxAttempts is the total number of attempts per request, first
	// included. Default 5; 1 disables retries.
	MaxAttempts int
	// RetryBaseDelay is the backoff before the first retry (before jitter);
	// it doubles per retry up to RetryMaxBackoff. Throttling answers (429,
	// SlowDown) use ten times RetryBaseDelay. Defaults 100ms and 5s.
	RetryBaseDelay  time.Duration
	RetryMaxBackoff time.Duration

	// HTTPClient replaces the HTTP client built from MaxConcurrency (tests).
	// The per-attempt RequestTimeout applies regardless.
	HTTPClient *http.Client

	// Observer, if set, is called once per API call after its retries with
	// an Op* and an Outcome* constant. It must be safe for concurrent use
	// and fast.
	Observer func(op, outcome string)

	// listPageSize overrides MaxKeys of ListObjectsV2 (tests).
	listPageSize int32
}

// String describes the configuration without the secret, so a Config can be
// logged safely.
func (c Config) String() string {
	return fmt.Sprintf("bucket.Config{endpoint=%s region=%s bucket=%s access_key_id=%s secret_access_key=%s}",
		c.endpointForLog(), c.Region, c.Bucket, c.AccessKeyID, redact(c.SecretAccessKey))
}

// GoString is String, so %#v does not print the secret either.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without the secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.endpointForLog()),
		slog.String("region", c.Region),
		slog.String("bucket", c.Bucket),
		slog.String("access_key_id", c.AccessKeyID),
		slog.String("secret_access_key", redact(c.SecretAccessKey)),
	)
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

func (c Config) endpointForLog() string {
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err == nil {
			u.User = nil // never log credentials embedded in a URL
			return u.String()
		}
		return "[invalid]"
	}
	if c.AccountID != "" {
		return r2Endpoint(c.AccountID)
	}
	return ""
}

func r2Endpoint(accountID string) string {
	return "https://" + accountID + ".r2.cloudflarestorage.com"
}

// Object is what the store says about one key.
type Object struct {
	Key          string
	Size         int64
	ETag         string // unquoted; may be "" (some stores give none)
	ContentType  string // empty in List results (ListObjectsV2 does not carry it)
	LastModified time.Time
}

// Client talks to one bucket. It is safe for concurrent use.
type Client struct {
	s3       *s3.Client
	bucket   string
	observer func(op, outcome string)
	pageSize int32
	// probe makes CheckBucket's calls retry at most once.
	probe func(*s3.Options)
}

// New validates cfg and builds a Client. It makes no request.
func New(cfg Config) (*Client, error) {
	cfg, endpoint, err := cfg.normalize()
	if err != nil {
		return nil, err
	}

	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Transport: newTransport(cfg.MaxConcurrency)}
	}

	opts := s3.Options{
		Region:       cfg.Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: cfg.Endpoint != "",
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		HTTPClient:   httpClient,
		Retryer:      newRetryer(cfg),
		// 0 means "unset" (= WhenSupported): these must be set explicitly.
		RequestChecksumCalculation:  aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation:  aws.ResponseChecksumValidationWhenRequired,
		DisableS3ExpressSessionAuth: aws.Bool(true),
		// The SDK's rules, resolved once per parameter set instead of twice
		// per request; every request gets its own copy (endpoint.go).
		EndpointResolverV2: newEndpointResolver(s3.NewDefaultEndpointResolverV2()),
		APIOptions: []func(*middleware.Stack) error{
			addAttemptTimeout(cfg.RequestTimeout),
		},
	}
	probeN := min(cfg.MaxAttempts, checkBucketAttempts)
	return &Client{
		probe:    func(o *s3.Options) { o.Retryer = retry.AddWithMaxAttempts(o.Retryer, probeN) },
		s3:       s3.New(opts),
		bucket:   cfg.Bucket,
		observer: cfg.Observer,
		pageSize: cfg.listPageSize,
	}, nil
}

// normalize applies defaults and validates, returning one error line per
// offending variable.
func (cfg Config) normalize() (Config, string, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	var endpoint string
	switch {
	case cfg.Endpoint != "":
		u, err := url.Parse(cfg.Endpoint)
		switch {
		case err != nil:
			bad("R2_ENDPOINT: not a URL")
		case u.Scheme != "http" && u.Scheme != "https":
			bad("R2_ENDPOINT: want an http:// or https:// URL, got scheme %q", u.Scheme)
		case u.Host == "":
			bad("R2_ENDPOINT: missing host")
		case u.User != nil:
			bad("R2_ENDPOINT: must not contain credentials; use R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY")
		case u.RawQuery != "" || u.Fragment != "":
			bad("R2_ENDPOINT: must not have a query or fragment")
		default:
			endpoint = strings.TrimSuffix(u.String(), "/")
		}
	case cfg.AccountID != "":
		if !isDNSLabel(cfg.AccountID) {
			bad("R2_ACCOUNT_ID: %q is not a valid account id (letters, digits and '-')", cfg.AccountID)
		} else {
			endpoint = r2Endpoint(strings.ToLower(cfg.AccountID))
		}
	default:
		bad("R2_ACCOUNT_ID or R2_ENDPOINT is required")
	}

	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	} else if strings.ContainsFunc(cfg.Region, func(r rune) bool { return r > unicode.MaxASCII || unicode.IsSpace(r) || r == '/' }) {
		bad("R2_REGION: %q is not a region name", cfg.Region)
	}
	if cfg.AccessKeyID == "" {
		bad("R2_ACCESS_KEY_ID is required")
	}
	if cfg.SecretAccessKey == "" {
		bad("R2_SECRET_ACCESS_KEY is required")
	}
	switch {
	case cfg.Bucket == "":
		bad("R2_BUCKET_NAME is required")
	case len(cfg.Bucket) > 255 || strings.ContainsAny(cfg.Bucket, "/ \t\r\n?#%\\"):
		bad("R2_BUCKET_NAME: %q is not a bucket name", cfg.Bucket)
	}

	if cfg.MaxConcurrency < 0 {
		bad("MaxConcurrency must not be negative")
	} else if cfg.MaxConcurrency == 0 {
		cfg.MaxConcurrency = DefaultMaxConcurrency
	}
	if cfg.RequestTimeout < 0 {
		bad("RequestTimeout must not be negative")
	} else if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxAttempts < 0 {
		bad("MaxAttempts must not be negative")
	} else if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.RetryBaseDelay < 0 || cfg.RetryMaxBackoff < 0 {
		bad("RetryBaseDelay and RetryMaxBackoff must not be negative")
	}
	if cfg.RetryBaseDelay == 0 {
		cfg.RetryBaseDelay = DefaultRetryBaseDelay
	}
	if cfg.RetryMaxBackoff == 0 {
		cfg.RetryMaxBackoff = DefaultRetryMaxBackoff
	}
	if cfg.listPageSize < 0 || cfg.listPageSize > 1000 {
		bad("list page size must be within 1..1000")
	}

	if len(errs) > 0 {
		return cfg, "", fmt.Errorf("bucket: invalid configuration:\n%w", errors.Join(errs...))
	}
	return cfg, endpoint, nil
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// newTransport clones http.DefaultTransport and sizes its idle pool for the
// fan-out. MaxConnsPerHost stays 0 (unlimited): the caller bounds concurrency,
// and a cap here would only queue requests invisibly behind a stalled one.
func newTransport(maxConcurrency int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = maxConcurrency
	t.MaxIdleConns = max(100, maxConcurrency)
	t.MaxConnsPerHost = 0
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return t
}

// Bucket returns the bucket name.
func (c *Client) Bucket() string { return c.bucket }

func (c *Client) observe(op string, err error) {
	if c.observer == nil {
		return
	}
	outcome := OutcomeOK
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoSuchBucket):
		outcome = OutcomeNotFound
	default:
		outcome = OutcomeError
	}
	c.observer(op, outcome)
}

// Head returns what the store says about key. A missing key gives an error
// matching errors.Is(err, ErrNotFound) (so does a missing bucket: see
// CheckBucket).
func (c *Client) Head(ctx context.Context, key string) (Object, error) {
	if reason := invalidKey(key); reason != "" {
		// No request: the store could only refuse it, and the SDK would reject an empty
		// key locally anyway. This is an answer about the key, not about the store.
		return Object{}, &classifiedError{msg: "bucket: head: " + reason, kind: ErrKeyRejected, cause: errors.New(reason)}
	}
	out, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(c.bucket),
		Key:    aws.String(key),
	})
	err = classify(OpHead, c.bucket, key, err)
	c.observe(OpHead, err)
	if err != nil {
		return Object{}, err
	}
	return Object{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         unquoteETag(aws.ToString(out.ETag)),
		ContentType:  aws.ToString(out.ContentType),
		LastModified: aws.ToTime(out.LastModified).UTC(),
	}, nil
}

// checkBucketAttempts bounds CheckBucket's tries (the client's other calls use MaxAttempts).
const checkBucketAttempts = 2

// CheckBucket verifies that the bucket exists and the credentials may use it
// (HeadBucket). A missing bucket gives ErrNoSuchBucket; rejected credentials
// give ErrAccessDenied.
//
// A HEAD answer has no body, so a 404 is confirmed with a one-key
// ListObjectsV2, whose error body names the cause: some stores answer 404 for
// an unknown access key (versitygw: XAdminUserNotFound), which is then
// reported as ErrAccessDenied, not as a missing bucket.
//
// It is the one probe a run sends while the bucket is down, so it retries once at most
// (checkBucketAttempts): the next tick probes again anyway.
func (c *Client) CheckBucket(ctx context.Context) error {
	_, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(c.bucket)}, c.probe)
	err = classify(OpHeadBucket, c.bucket, "", err)
	c.observe(OpHeadBucket, err)
	if !errors.Is(err, ErrNoSuchBucket) {
		return err
	}
	_, lerr := c.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(c.bucket), MaxKeys: aws.Int32(1)}, c.probe)
	lerr = classify(OpList, c.bucket, "", lerr)
	c.observe(OpList, lerr)
	switch {
	case lerr == nil:
		return nil // HEAD said 404 but the bucket lists: it exists
	case errors.Is(lerr, ErrAccessDenied):
		return lerr
	}
	return err
}

// List streams the objects under prefix ("" for all) in key order, one
// ListObjectsV2 page (at most 1000 objects) at a time. fn must not keep page
// after it returns. An error from fn stops the listing and is returned as is.
func (c *Client) List(ctx context.Context, prefix string, fn func(page []Object) error) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(c.bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	if c.pageSize > 0 {
		in.MaxKeys = aws.Int32(c.pageSize)
	}
	var page []Object
	for {
		out, err := c.s3.ListObjectsV2(ctx, in)
		err = classify(OpList, c.bucket, prefix, err)
		c.observe(OpList, err)
		if err != nil {
			return err
		}
		page = page[:0]
		for _, o := range out.Contents {
			page = append(page, Object{
				Key:          aws.ToString(o.Key),
				Size:         aws.ToInt64(o.Size),
				ETag:         unquoteETag(aws.ToString(o.ETag)),
				LastModified: aws.ToTime(o.LastModified).UTC(),
			})
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return nil
		}
		next := aws.ToString(out.NextContinuationToken)
		if next == "" || next == aws.ToString(in.ContinuationToken) {
			return fmt.Errorf("bucket: list %q: store says the listing is truncated but gave no new continuation token", prefix)
		}
		in.ContinuationToken = aws.String(next)
	}
}

// KeyError is the store's refusal to delete one key.
type KeyError struct {
	Key, Code, Message string
}

// DeleteError reports the keys a Delete did not delete.
type DeleteError struct {
	Errors []KeyError
}

func (e *DeleteError) Error() string {
	if len(e.Errors) == 0 {
		return "bucket: delete: no errors"
	}
	first := e.Errors[0]
	msg := fmt.Sprintf("bucket: delete: %d key(s) not deleted; first %q: %s", len(e.Errors), first.Key, first.Code)
	if first.Message != "" {
		msg += ": " + first.Message
	}
	return msg
}

// Delete deletes up to MaxDeleteKeys keys in one DeleteObjects request and
// returns the keys the store reports deleted (S3 reports a key that did not
// exist as deleted). If the request fails as a whole, deleted is nil. If some
// keys were refused (or not reported at all), err is a *DeleteError listing
// them and deleted holds the rest. With no keys it does nothing.
func (c *Client) Delete(ctx context.Context, keys []string) (deleted []string, err error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if len(keys) > MaxDeleteKeys {
		return nil, fmt.Errorf("bucket: delete: %d keys in one call, at most %d allowed", len(keys), MaxDeleteKeys)
	}
	ids := make([]types.ObjectIdentifier, len(keys))
	for i, k := range keys {
		if k == "" {
			return nil, errors.New("bucket: delete: empty key")
		}
		ids[i] = types.ObjectIdentifier{Key: aws.String(k)}
	}
	out, err := c.s3.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(c.bucket),
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(false)},
	}, func(o *s3.Options) { o.APIOptions = append(o.APIOptions, md5InsteadOfCRC32) })
	err = classify(OpDelete, c.bucket, "", err)
	c.observe(OpDelete, err)
	if err != nil {
		return nil, err
	}

	reported := make(map[string]bool, len(keys))
	for _, d := range out.Deleted {
		k := aws.ToString(d.Key)
		if !reported[k] {
			reported[k] = true
			deleted = append(deleted, k)
		}
	}
	var de DeleteError
	for _, e := range out.Errors {
		k := aws.ToString(e.Key)
		reported[k] = true
		de.Errors = append(de.Errors, KeyError{Key: k, Code: aws.ToString(e.Code), Message: aws.ToString(e.Message)})
	}
	for _, k := range keys {
		if !reported[k] {
			reported[k] = true
			de.Errors = append(de.Errors, KeyError{Key: k, Code: "NotReported", Message: "the store's answer does not mention this key"})
		}
	}
	if len(de.Errors) > 0 {
		return deleted, &de
	}
	return deleted, nil
}

// md5InsteadOfCRC32 makes DeleteObjects carry exactly one checksum,
// Content-MD5, as SDKs did before 2025: S3, R2, MinIO, versitygw and the
// stores that still demand Content-MD5 (OCI, Alibaba OSS, ...) all accept it,
// whereas the SDK's default, a CRC32 header, is refused by stores that want
// Content-MD5, and sending both risks R2's "only one checksum at a time".
func md5InsteadOfCRC32(s *middleware.Stack) error {
	_, _ = s.Finalize.Remove("AWSChecksum:ComputeInputPayloadChecksum") // absent is fine
	return smithyhttp.AddContentChecksumMiddleware(s)
}

// unquoteETag turns `"abc"` or `W/"abc"` into abc.
func unquoteETag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}
