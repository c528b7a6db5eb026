// Package bucket is the worker's S3 client for Cloudflare R2 and any other
// S3-compatible store (versitygw, MinIO, AWS S3, ...).
//
// # Contract
//
// A Client answers four questions and nothing else: does this key exist and
// what is it (Head), is the bucket there and may we use it (CheckBucket),
// which keys exist under a prefix (List), and delete these keys (Delete).
//
// Errors fall into three groups, and callers must keep them apart:
//
//   - Definite answers. errors.Is(err, ErrNotFound): the store said the key
//     does not exist (HTTP 404). errors.Is(err, ErrNoSuchBucket): the bucket
//     does not exist. errors.Is(err, ErrAccessDenied): the credentials are
//     wrong or lack permission (HTTP 401/403, signature errors). A 403 is
//     never reported as ErrNotFound.
//   - Transient failures. IsTransient(err) is true for timeouts, HTTP 5xx,
//     429 and SlowDown throttling, connection resets/refusals and truncated
//     responses. They have already been retried MaxAttempts times when they
//     reach the caller; the answer is "unknown", and nothing should be
//     concluded from it (an upload must keep its status).
//   - Everything else (other 4xx, invalid arguments, a cancelled context):
//     neither definite nor transient. Treat it as "unknown" too.
//
// HeadObject on a bucket that does not exist also answers a bodiless 404,
// indistinguishable from a missing key. That is why CheckBucket exists: run it
// once before trusting ErrNotFound from Head during a run.
//
// # Requests, retries, timeouts
//
// The underlying s3.Client is built directly from s3.Options (no shared config
// files, no environment lookups): static credentials, the signing region
// (default "auto", what R2 wants), the endpoint (R2 account endpoint,
// virtual-hosted style; or R2_ENDPOINT, path-style), and checksums only when
// an operation requires them (service/s3 >= 1.73 otherwise adds CRC headers
// and validates response checksums, which R2 and several S3-compatible stores
// reject). DeleteObjects, which requires a checksum, carries exactly one:
// Content-MD5 instead of the SDK's CRC32 header. Every store accepts
// Content-MD5 (several, e.g. OCI and Alibaba OSS, accept nothing else), and
// sending two checksums risks R2's "only one checksum at a time".
//
// Endpoint resolution runs the SDK's rules once per client (per bucket and
// options) and gives every request its own deep copy of the result
// (endpoint.go). For R2's region "auto", which is not in the SDK's partition
// table, each resolution compiled every partition's region regexp, twice per
// request (about half the worker's CPU per HEAD); the copy matters because the
// SDK writes per request into the endpoint's auth options.
//
// Every logical request is retried up to MaxAttempts times in total with
// exponential backoff and full jitter (RetryBaseDelay doubling up to
// RetryMaxBackoff; throttling answers start ten times higher). There is no
// client-wide retry quota (ratelimit.None): the SDK's shared token bucket
// would otherwise fail a wide fan-out against a briefly unhealthy store with
// "retry quota exceeded". Each attempt has its own deadline (RequestTimeout),
// so a stalled connection is abandoned and retried instead of hanging the run;
// the caller's context bounds the whole request. Worst case for one request
// is therefore about MaxAttempts*RequestTimeout plus backoff.
//
// The HTTP transport keeps at least MaxConcurrency idle connections per host
// (the default of 2, or the SDK's 10, would make a 32-way fan-out open and
// close connections constantly) and does not cap connections per host: the
// caller bounds concurrency.
//
// # Keys
//
// Keys are passed through byte for byte: unicode, spaces, '+', '%', '#', '?',
// a leading '/', repeated '/', and keys up to S3's 1024-byte limit are all
// addressed exactly (the SDK percent-encodes them; nothing here cleans
// paths). List returns keys as the store's XML listing gives them; keys with
// characters that XML 1.0 cannot carry (control characters) are not
// supported.
//
// # Objects
//
// Object.ETag is unquoted and may be empty: some stores (versitygw for files
// written directly to its directory) give none. LastModified is in UTC.
//
// # Metrics
//
// Config.Observer, when set, is called once per API call with the operation
// ("head", "head_bucket", "list", "delete") and its outcome ("ok",
// "not_found", "error"), after retries. A List of N pages is N "list" calls:
// each page is a billable request (Class A on R2).
package bucket
