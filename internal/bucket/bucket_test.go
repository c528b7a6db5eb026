package bucket

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func newClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func put(t testing.TB, c *Client, key, body, contentType string) {
	t.Helper()
	in := &s3.PutObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key), Body: strings.NewReader(body)}
	if contentType != "" {
		in.ContentType = aws.String(contentType)
	}
	if _, err := c.s3.PutObject(ctxT(t), in); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// longKey is exactly 1024 bytes, with no '/'-separated segment over 255
// bytes (versitygw's posix backend stores each segment as a file name).
func longKey() string {
	var b strings.Builder
	for b.Len() < 1024 {
		seg := strings.Repeat("x", min(200, 1024-b.Len()))
		b.WriteString(seg)
		if b.Len() < 1023 {
			b.WriteByte('/')
		}
	}
	k := b.String()
	if strings.HasSuffix(k, "/") {
		k = k[:len(k)-1] + "y"
	}
	return k
}

// versitygwStored is the key versitygw's posix backend lists for key: it
// stores keys as file paths, so a leading '/' and repeated '/' disappear (R2
// and S3 keep them; TestKeysOnTheWire shows the client sends them).
func versitygwStored(key string) string {
	for strings.Contains(key, "//") {
		key = strings.ReplaceAll(key, "//", "/")
	}
	return strings.TrimPrefix(key, "/")
}

func TestNewValidation(t *testing.T) {
	valid := Config{Endpoint: "http://127.0.0.1:9", AccessKeyID: "AK", SecretAccessKey: "s3cr3t-value", Bucket: "b"}
	tests := []struct {
		name string
		mod  func(*Config)
		want []string
	}{
		{"no endpoint", func(c *Config) { c.Endpoint = "" }, []string{"R2_ACCOUNT_ID or R2_ENDPOINT"}},
		{"bad endpoint", func(c *Config) { c.Endpoint = "ftp://x" }, []string{"R2_ENDPOINT"}},
		{"endpoint with credentials", func(c *Config) { c.Endpoint = "http://u:s3cr3t-value@h" }, []string{"R2_ENDPOINT"}},
		{"bad account", func(c *Config) { c.Endpoint, c.AccountID = "", "a/b" }, []string{"R2_ACCOUNT_ID"}},
		{"no key", func(c *Config) { c.AccessKeyID = "" }, []string{"R2_ACCESS_KEY_ID"}},
		{"no secret", func(c *Config) { c.SecretAccessKey = "" }, []string{"R2_SECRET_ACCESS_KEY"}},
		{"no bucket", func(c *Config) { c.Bucket = "" }, []string{"R2_BUCKET_NAME"}},
		{"bad bucket", func(c *Config) { c.Bucket = "a/b" }, []string{"R2_BUCKET_NAME"}},
		{"bad region", func(c *Config) { c.Region = "us east" }, []string{"R2_REGION"}},
		{"all at once", func(c *Config) { *c = Config{} }, []string{"R2_ACCOUNT_ID or R2_ENDPOINT", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET_NAME"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.mod(&cfg)
			_, err := New(cfg)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t-value") {
				t.Errorf("error leaks the secret: %q", err)
			}
		})
	}

	c, err := New(Config{AccountID: "0123abcd", AccessKeyID: "AK", SecretAccessKey: "s3cr3t-value", Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Bucket() != "b" {
		t.Fatalf("Bucket() = %q", c.Bucket())
	}
	o := c.s3.Options()
	if got := aws.ToString(o.BaseEndpoint); got != "https://0123abcd.r2.cloudflarestorage.com" || o.UsePathStyle || o.Region != "auto" {
		t.Fatalf("R2 options: endpoint %q path-style %v region %q", got, o.UsePathStyle, o.Region)
	}
	if o.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired || o.ResponseChecksumValidation != aws.ResponseChecksumValidationWhenRequired {
		t.Fatal("checksums not WhenRequired")
	}
	if o.Retryer.MaxAttempts() != DefaultMaxAttempts {
		t.Fatalf("MaxAttempts %d", o.Retryer.MaxAttempts())
	}
	for _, s := range []string{fmt.Sprint(valid), fmt.Sprintf("%+v", valid), fmt.Sprintf("%#v", valid)} {
		if strings.Contains(s, "s3cr3t-value") {
			t.Fatalf("Config formatting leaks the secret: %s", s)
		}
	}
}

func TestTransportSizedForFanOut(t *testing.T) {
	tr := newTransport(64)
	if tr.MaxIdleConnsPerHost < 64 || tr.MaxIdleConns < 64 || tr.MaxConnsPerHost != 0 {
		t.Fatalf("transport: idle/host %d idle %d conns/host %d", tr.MaxIdleConnsPerHost, tr.MaxIdleConns, tr.MaxConnsPerHost)
	}
}

func TestHeadKeys(t *testing.T) {
	t.Parallel()
	cfg, _ := testBucket(t)
	var mu sync.Mutex
	seen := map[string]int{}
	cfg.Observer = func(op, outcome string) { mu.Lock(); seen[op+"/"+outcome]++; mu.Unlock() }
	c := newClient(t, cfg)
	ctx := ctxT(t)

	keys := []struct{ name, key string }{
		{"plain", "uploads/plain.txt"},
		{"unicode", "uploads/日本語/ファイル-ü-ß-😀.txt"},
		{"space", "uploads/with space.txt"},
		{"plus", "uploads/a+b.txt"},
		{"percent", "uploads/100%25 literal%.txt"},
		{"hash", "uploads/hash#tag.txt"},
		{"question", "uploads/what?x=1&y=2.txt"},
		{"leading slash", "/leading/slash.txt"},
		{"double slash", "uploads//double.txt"},
		{"reserved", "uploads/semi;colon:at@eq=comma,dollar$bang!'()*~.txt"},
		{"1024 bytes", longKey()},
	}
	if n := len(longKey()); n != 1024 {
		t.Fatalf("longKey is %d bytes", n)
	}
	for i, k := range keys {
		put(t, c, k.key, fmt.Sprintf("body %d of %s", i, k.name), "text/plain; charset=utf-8")
	}

	for i, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			body := fmt.Sprintf("body %d of %s", i, k.name)
			o, err := c.Head(ctx, k.key)
			if err != nil {
				t.Fatalf("Head(%q): %v", k.key, err)
			}
			if o.Key != k.key || o.Size != int64(len(body)) || o.ETag != md5hex(body) || o.ContentType != "text/plain; charset=utf-8" {
				t.Fatalf("Head(%q) = %+v; want size %d etag %s", k.key, o, len(body), md5hex(body))
			}
			if o.LastModified.IsZero() || time.Since(o.LastModified) > time.Hour || o.LastModified.Location() != time.UTC {
				t.Fatalf("LastModified %v", o.LastModified)
			}
			// A near miss is a miss, not this object; one byte past the longest key S3
			// accepts is refused before any request, as a rejected key.
			miss, want := k.key+"-missing", ErrNotFound
			if len(miss) > MaxKeyBytes {
				want = ErrKeyRejected
			}
			_, err = c.Head(ctx, miss)
			if !errors.Is(err, want) || IsTransient(err) {
				t.Fatalf("Head(missing) err = %v; want %v, not transient", err, want)
			}
		})
	}

	// List returns every key byte for byte.
	var listed []string
	if err := c.List(ctx, "", func(page []Object) error {
		for _, o := range page {
			listed = append(listed, o.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var want, wantListed []string
	for _, k := range keys {
		want = append(want, k.key)
		wantListed = append(wantListed, versitygwStored(k.key))
	}
	slices.Sort(want)
	slices.Sort(wantListed)
	slices.Sort(listed)
	if !slices.Equal(listed, wantListed) {
		t.Fatalf("List keys:\n got %q\nwant %q", listed, wantListed)
	}

	// Delete addresses them exactly too.
	deleted, err := c.Delete(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deleted)
	if !slices.Equal(deleted, want) {
		t.Fatalf("Delete reported:\n got %q\nwant %q", deleted, want)
	}
	for _, k := range want {
		if _, err := c.Head(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after delete, Head(%q) err = %v", k, err)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	// A key refused before sending is no request, so the observer does not see it.
	sentMisses := 0
	for _, k := range keys {
		if len(k.key+"-missing") <= MaxKeyBytes {
			sentMisses++
		}
	}
	if seen["head/ok"] != len(keys) || seen["head/not_found"] != len(keys)+sentMisses || seen["list/ok"] != 1 || seen["delete/ok"] != 1 {
		t.Fatalf("observer saw %v", seen)
	}
}

func TestHeadFileWithoutETag(t *testing.T) {
	t.Parallel()
	cfg, dir := testBucket(t)
	needDir(t, dir)
	c := newClient(t, cfg)
	if err := os.MkdirAll(filepath.Join(dir, "raw"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "raw", "file.bin"), []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := c.Head(ctxT(t), "raw/file.bin")
	if err != nil {
		t.Fatal(err)
	}
	if o.Size != 5 || o.ETag != "" {
		t.Fatalf("Head = %+v; want size 5, empty ETag", o)
	}
}

func TestCheckBucket(t *testing.T) {
	t.Parallel()
	cfg, _ := testBucket(t)
	ctx := ctxT(t)
	if err := newClient(t, cfg).CheckBucket(ctx); err != nil {
		t.Fatalf("existing bucket: %v", err)
	}

	var outcomes []string
	cfg.Bucket = "no-such-bucket-" + randHex(4)
	cfg.Observer = func(op, outcome string) { outcomes = append(outcomes, op+"/"+outcome) }
	c := newClient(t, cfg)
	err := c.CheckBucket(ctx)
	if !errors.Is(err, ErrNoSuchBucket) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrAccessDenied) || IsTransient(err) {
		t.Fatalf("missing bucket: err = %v; want only ErrNoSuchBucket", err)
	}
	if !strings.Contains(err.Error(), cfg.Bucket) || !strings.Contains(err.Error(), "R2_BUCKET_NAME") {
		t.Fatalf("message does not help: %q", err)
	}
	// The reason CheckBucket exists: HEAD of a key in a missing bucket is a
	// bodiless 404 that looks exactly like a missing key.
	if _, err := c.Head(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Head in missing bucket: %v", err)
	}
	// List and Delete get a body with the code: NoSuchBucket.
	if err := c.List(ctx, "", func([]Object) error { return nil }); !errors.Is(err, ErrNoSuchBucket) {
		t.Fatalf("List in missing bucket: %v", err)
	}
	// CheckBucket confirms a HEAD 404 with a one-key list (its body names the cause).
	if !slices.Equal(outcomes, []string{"head_bucket/not_found", "list/not_found", "head/not_found", "list/not_found"}) {
		t.Fatalf("observer: %v", outcomes)
	}
}

func TestAccessDenied(t *testing.T) {
	t.Parallel()
	cfg, _ := testBucket(t)
	ctx := ctxT(t)
	put(t, newClient(t, cfg), "exists.txt", "x", "")

	for _, tc := range []struct {
		name string
		mod  func(*Config)
		// versitygw answers an unknown access key with 404
		// XAdminUserNotFound; on HEAD (no body) that is indistinguishable
		// from a missing key. CheckBucket still reports it as access
		// denied, which is why callers run it before trusting Head.
		headIs404 bool
	}{
		{"wrong secret", func(c *Config) { c.SecretAccessKey = "wrong-" + randHex(8) }, false},
		{"unknown key id", func(c *Config) { c.AccessKeyID = "NOPE" + randHex(4) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := cfg
			tc.mod(&bad)
			c := newClient(t, bad)
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrAccessDenied) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoSuchBucket) || IsTransient(err) {
					t.Fatalf("%s: err = %v; want only ErrAccessDenied", what, err)
				}
				if strings.Contains(err.Error(), bad.SecretAccessKey) {
					t.Fatalf("%s: error leaks the secret", what)
				}
			}
			check("CheckBucket", c.CheckBucket(ctx))
			if !strings.Contains(c.CheckBucket(ctx).Error(), "R2_SECRET_ACCESS_KEY") {
				t.Fatal("message does not name the credentials")
			}
			check("List", c.List(ctx, "", func([]Object) error { return nil }))
			_, err := c.Delete(ctx, []string{"exists.txt"})
			check("Delete", err)
			_, err = c.Head(ctx, "exists.txt")
			if tc.headIs404 {
				if err == nil {
					t.Fatal("Head with an unknown key id succeeded")
				}
				t.Logf("versitygw quirk, Head with unknown key id: %v", err)
				return
			}
			check("Head existing", err)
			_, err = c.Head(ctx, "missing.txt")
			check("Head missing", err) // a 403, never a NotFound
		})
	}
	if _, err := newClient(t, cfg).Head(ctx, "exists.txt"); err != nil {
		t.Fatalf("object gone after denied delete: %v", err)
	}
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	cfg, dir := testBucket(t)
	needDir(t, dir)
	ctx := ctxT(t)

	// Files written into the bucket directory are objects: the quickest way
	// to make more than one page.
	const n = 1234
	var want []string
	for _, sub := range []string{"p/a", "p/b"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		key := fmt.Sprintf("p/%s/%05d", []string{"a", "b"}[i%2], i)
		if err := os.WriteFile(filepath.Join(dir, key), []byte(key), 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, key)
	}
	if err := os.WriteFile(filepath.Join(dir, "q"), []byte("outside the prefix"), 0o644); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)

	for _, tc := range []struct {
		pageSize  int32
		wantPages int
	}{{0, 2}, {100, 13}} {
		t.Run(fmt.Sprintf("page size %d", tc.pageSize), func(t *testing.T) {
			cfg := cfg
			cfg.listPageSize = tc.pageSize
			var calls int
			cfg.Observer = func(op, outcome string) {
				if op == OpList && outcome == OutcomeOK {
					calls++
				}
			}
			c := newClient(t, cfg)
			var got []string
			var pages []int
			err := c.List(ctx, "p/", func(page []Object) error {
				pages = append(pages, len(page))
				for _, o := range page {
					if o.Size != int64(len(o.Key)) || o.LastModified.IsZero() {
						return fmt.Errorf("object %+v", o)
					}
					got = append(got, o.Key)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("listed %d keys, want %d (in order, no duplicates)", len(got), len(want))
			}
			if len(pages) != tc.wantPages || calls != tc.wantPages {
				t.Fatalf("pages %v, observer list calls %d; want %d pages", pages, calls, tc.wantPages)
			}
		})
	}

	// An error from fn stops the listing and comes back unchanged.
	c := newClient(t, Config{Endpoint: cfg.Endpoint, AccessKeyID: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey, Bucket: cfg.Bucket, listPageSize: 10})
	stop := errors.New("stop")
	var pages int
	err := c.List(ctx, "p/", func([]Object) error { pages++; return stop })
	if err != stop || pages != 1 {
		t.Fatalf("err %v after %d pages", err, pages)
	}
	// An empty prefix match calls fn never.
	if err := c.List(ctx, "nothing/", func([]Object) error { t.Fatal("fn called"); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	cfg, _ := testBucket(t)
	c := newClient(t, cfg)
	ctx := ctxT(t)
	for _, k := range []string{"d/1", "d/2", "d/3", "keep"} {
		put(t, c, k, k, "")
	}
	deleted, err := c.Delete(ctx, []string{"d/1", "d/2", "d/3", "d/never-existed"})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deleted)
	// S3 semantics: deleting a missing key succeeds.
	if !slices.Equal(deleted, []string{"d/1", "d/2", "d/3", "d/never-existed"}) {
		t.Fatalf("deleted %q", deleted)
	}
	if _, err := c.Head(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Head(ctx, "d/1"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}

	if d, err := c.Delete(ctx, nil); d != nil || err != nil {
		t.Fatalf("empty delete: %v %v", d, err)
	}
	tooMany := make([]string, MaxDeleteKeys+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprint("k", i)
	}
	if _, err := c.Delete(ctx, tooMany); err == nil || !strings.Contains(err.Error(), "1001") {
		t.Fatalf("1001 keys: %v", err)
	}
	// Exactly 1000 is one request.
	deleted, err = c.Delete(ctx, tooMany[:MaxDeleteKeys])
	if err != nil || len(deleted) != MaxDeleteKeys {
		t.Fatalf("1000 keys: %d deleted, %v", len(deleted), err)
	}
}

// recorder records the escaped request paths the client puts on the wire.
type recorder struct {
	mu    sync.Mutex
	paths []string
	next  http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.paths = append(r.paths, req.Method+" "+req.URL.EscapedPath())
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// s3Escape is S3's URI encoding of a key: every byte but unreserved
// characters and '/' percent-encoded.
func s3Escape(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// TestKeysOnTheWire checks that keys are sent byte for byte, including the
// shapes versitygw's posix backend normalises when it stores them (a leading
// '/', "//"): R2 and S3 keep those distinct.
func TestKeysOnTheWire(t *testing.T) {
	t.Parallel()
	cfg, _ := testBucket(t)
	rec := &recorder{next: http.DefaultTransport}
	cfg.HTTPClient = &http.Client{Transport: rec}
	c := newClient(t, cfg)
	keys := []string{"/leading", "a//b", "a/./b", "a/../b", "sp ace+plus%pct#hash?q=1&r", "ü😀", "trailing/"}
	for _, k := range keys {
		_, _ = c.Head(ctxT(t), k)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, k := range keys {
		want := "HEAD /" + cfg.Bucket + "/" + s3Escape(k)
		if rec.paths[i] != want {
			t.Errorf("key %q on the wire as %q, want %q", k, rec.paths[i], want)
		}
	}
}

// headerRecorder records request headers per method.
type headerRecorder struct {
	mu   sync.Mutex
	hdrs map[string][]http.Header
	next http.RoundTripper
}

func (h *headerRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.hdrs[r.Method] = append(h.hdrs[r.Method], r.Header.Clone())
	h.mu.Unlock()
	return h.next.RoundTrip(r)
}

// Checksums only when required, and DeleteObjects with exactly one:
// Content-MD5 (what every S3-compatible store accepts), no CRC32 header.
func TestChecksumHeaders(t *testing.T) {
	t.Parallel()
	cfg, _ := testBucket(t)
	rec := &headerRecorder{hdrs: map[string][]http.Header{}, next: http.DefaultTransport}
	cfg.HTTPClient = &http.Client{Transport: rec}
	c := newClient(t, cfg)
	ctx := ctxT(t)
	put(t, c, "k", "v", "")
	if _, err := c.Head(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := c.List(ctx, "", func([]Object) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if d, err := c.Delete(ctx, []string{"k"}); err != nil || len(d) != 1 {
		t.Fatal(d, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for method, hs := range rec.hdrs {
		for _, h := range hs {
			for name := range h {
				lname := strings.ToLower(name)
				if strings.HasPrefix(lname, "x-amz-checksum") || lname == "x-amz-sdk-checksum-algorithm" || lname == "x-amz-trailer" {
					t.Errorf("%s sent %s: %v", method, name, h[name])
				}
			}
		}
	}
	if len(rec.hdrs["POST"]) != 1 || rec.hdrs["POST"][0].Get("Content-MD5") == "" {
		t.Fatalf("DeleteObjects without Content-MD5: %v", rec.hdrs["POST"])
	}
}
