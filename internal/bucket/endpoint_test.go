package bucket

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyauth "github.com/aws/smithy-go/auth"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// countingResolver counts the resolutions that reach the SDK's rules.
type countingResolver struct {
	next  s3.EndpointResolverV2
	calls atomic.Int64
}

func (r *countingResolver) ResolveEndpoint(ctx context.Context, p s3.EndpointParameters) (smithyendpoints.Endpoint, error) {
	r.calls.Add(1)
	return r.next.ResolveEndpoint(ctx, p)
}

// endpointParams mirrors what service/s3 binds for one of our clients (see
// bindEndpointParams in service/s3's endpoints.go) for an operation on bucket
// with an object key.
func endpointParams(t testing.TB, cfg Config, key string) s3.EndpointParameters {
	t.Helper()
	c := newClient(t, cfg)
	o := c.s3.Options()
	return s3.EndpointParameters{
		Bucket:                         aws.String(c.bucket),
		Region:                         aws.String(o.Region),
		UseFIPS:                        aws.Bool(false),
		UseDualStack:                   aws.Bool(false),
		Endpoint:                       o.BaseEndpoint,
		ForcePathStyle:                 aws.Bool(o.UsePathStyle),
		Accelerate:                     aws.Bool(false),
		DisableMultiRegionAccessPoints: aws.Bool(false),
		UseArnRegion:                   aws.Bool(false),
		DisableS3ExpressSessionAuth:    o.DisableS3ExpressSessionAuth,
		Key:                            aws.String(key),
	}
}

var endpointConfigs = []Config{
	{Endpoint: "http://127.0.0.1:7070", Region: "auto", AccessKeyID: "AK", SecretAccessKey: "S", Bucket: "uploads"},
	{Endpoint: "http://127.0.0.1:7070", Region: "us-east-1", AccessKeyID: "AK", SecretAccessKey: "S", Bucket: "uploads"},
	{Endpoint: "https://s3.example.com/base", Region: "eu-central-1", AccessKeyID: "AK", SecretAccessKey: "S", Bucket: "b.with.dots"},
	{AccountID: "0123abcd", AccessKeyID: "AK", SecretAccessKey: "S", Bucket: "uploads"},                 // R2, auto, virtual-hosted
	{AccountID: "0123abcd", Region: "wnam", AccessKeyID: "AK", SecretAccessKey: "S", Bucket: "uploads"}, // R2 location hint as region
}

func sigv4Region(t *testing.T, ep smithyendpoints.Endpoint) string {
	t.Helper()
	opts, ok := smithyauth.GetAuthOptions(&ep.Properties)
	if !ok || len(opts) == 0 {
		t.Fatalf("endpoint %s has no auth options", ep.URI.String())
	}
	for _, o := range opts {
		if o.SchemeID == "sigv4" { // the rules name it so; the SDK maps it to aws.auth#sigv4
			r, _ := smithyhttp.GetSigV4SigningRegion(&o.SignerProperties)
			return r
		}
	}
	t.Fatalf("endpoint %s has no sigv4 option", ep.URI.String())
	return ""
}

// The memoized endpoint is exactly what the SDK's rules give, on the first
// call (a miss) and on later ones (hits): URI, headers and every property,
// auth options (sigv4, signing name s3, the configured signing region,
// disableDoubleEncoding) included.
func TestEndpointMatchesSDK(t *testing.T) {
	sdk := s3.NewDefaultEndpointResolverV2()
	for _, cfg := range endpointConfigs {
		t.Run(cfg.endpointForLog()+"/"+cfg.Region, func(t *testing.T) {
			params := endpointParams(t, cfg, "u/001/0000001")
			want, err := sdk.ResolveEndpoint(context.Background(), params)
			if err != nil {
				t.Fatal(err)
			}
			r := newEndpointResolver(s3.NewDefaultEndpointResolverV2())
			for i := range 3 {
				got, err := r.ResolveEndpoint(context.Background(), params)
				if err != nil {
					t.Fatal(err)
				}
				if got.URI != want.URI || !reflect.DeepEqual(got.Headers, want.Headers) ||
					!reflect.DeepEqual(got.Properties.Values(), want.Properties.Values()) {
					t.Fatalf("call %d: got %s %v %#v, SDK %s %v %#v", i, got.URI.String(), got.Headers, got.Properties.Values(),
						want.URI.String(), want.Headers, want.Properties.Values())
				}
			}
			region := cfg.Region
			if region == "" {
				region = DefaultRegion
			}
			if got := sigv4Region(t, want); got != region {
				t.Fatalf("signing region %q, want %q", got, region)
			}
			t.Logf("%s, signing region %s", want.URI.String(), region)
		})
	}
}

// The memo leaves Key, Prefix and CopySource out of its key, so that one
// resolution serves every HEAD. That is only right while the SDK's rules
// ignore them: this asks the SDK itself, so an upgrade whose rules start
// reading them fails here.
func TestEndpointIgnoresPerObjectParams(t *testing.T) {
	sdk := s3.NewDefaultEndpointResolverV2()
	for _, cfg := range endpointConfigs {
		base := endpointParams(t, cfg, "")
		base.Key = nil
		want, err := sdk.ResolveEndpoint(context.Background(), base)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"", "k", "/leading//slashes", "a b+c%?#", "u/001/0000001", "arn:aws:s3:::other/key"} {
			p := base
			p.Key, p.Prefix, p.CopySource = aws.String(v), aws.String(v), aws.String("src/"+v)
			got, err := sdk.ResolveEndpoint(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if got.URI != want.URI || !reflect.DeepEqual(got.Headers, want.Headers) ||
				!reflect.DeepEqual(got.Properties.Values(), want.Properties.Values()) {
				t.Fatalf("%s: key/prefix/copy source %q change the SDK's endpoint: %s vs %s",
					cfg.endpointForLog(), v, got.URI.String(), want.URI.String())
			}
		}
	}
}

// Two requests never share an endpoint's mutable parts. The SDK writes into
// what the resolver returns (auth options' SchemeID and property maps, then
// the signing name and region), per request; the removed cache returned one
// shared Endpoint, and a 32-way fan-out crashed with "concurrent map writes".
// With that cache this test fails: a write to one result shows in the next.
func TestEndpointCopiesShareNothing(t *testing.T) {
	cfg := endpointConfigs[0]
	c := newClient(t, cfg)
	r, ok := c.s3.Options().EndpointResolverV2.(*endpointResolver)
	if !ok {
		t.Fatalf("client's EndpointResolverV2 is %T, want *endpointResolver", c.s3.Options().EndpointResolverV2)
	}
	params := endpointParams(t, cfg, "k1")
	ctx := context.Background()
	first, err := r.ResolveEndpoint(ctx, params) // miss: the SDK's own result
	if err != nil {
		t.Fatal(err)
	}
	second, err := r.ResolveEndpoint(ctx, params) // hit: a copy of the memo
	if err != nil {
		t.Fatal(err)
	}
	params.Key = aws.String("k2")
	third, err := r.ResolveEndpoint(ctx, params) // hit, another object
	if err != nil {
		t.Fatal(err)
	}
	if len(*r.cache.Load()) != 1 {
		t.Fatalf("%d memo entries for one bucket, want 1", len(*r.cache.Load()))
	}

	// Write into the first two the way the SDK does per request (and more).
	type marker struct{}
	for i, ep := range []*smithyendpoints.Endpoint{&first, &second} {
		ep.Properties.Set(marker{}, i)
		if ep.Headers == nil {
			ep.Headers = map[string][]string{}
		}
		ep.Headers.Set("X-Marker", fmt.Sprint(i))
		ep.URI.Path += "/mutated"
		opts, _ := smithyauth.GetAuthOptions(&ep.Properties)
		for _, o := range opts {
			o.SchemeID += "-mutated"
			smithyhttp.SetSigV4SigningRegion(&o.SignerProperties, fmt.Sprint("mutated-", i))
			o.IdentityProperties.Set(marker{}, i)
		}
	}
	if v := second.Properties.Get(marker{}); v != 1 {
		t.Fatalf("the first two endpoints share their properties: second's marker %v", v)
	}
	if third.Properties.Has(marker{}) || third.Headers.Get("X-Marker") != "" {
		t.Fatalf("third endpoint sees other requests' writes: %#v %v", third.Properties.Values(), third.Headers)
	}
	opts, _ := smithyauth.GetAuthOptions(&third.Properties)
	for _, o := range opts {
		if o.SchemeID != "sigv4" || o.IdentityProperties.Has(marker{}) {
			t.Fatalf("third endpoint's auth option was written by other requests: %q %#v", o.SchemeID, o.IdentityProperties.Values())
		}
	}
	if got := sigv4Region(t, third); got != cfg.Region {
		t.Fatalf("third endpoint's signing region %q, want %q: the memo was written through a copy", got, cfg.Region)
	}
	if third.URI.Path != "/uploads" {
		t.Fatalf("third endpoint's path %q", third.URI.Path)
	}
	fo, _ := smithyauth.GetAuthOptions(&first.Properties)
	so, _ := smithyauth.GetAuthOptions(&second.Properties)
	to, _ := smithyauth.GetAuthOptions(&third.Properties)
	if len(fo) == 0 || len(so) == 0 || len(to) == 0 || fo[0] == so[0] || so[0] == to[0] || &so[0] == &to[0] {
		t.Fatal("auth options shared between requests")
	}
}

// After the first request, no resolution reaches the SDK's rules (the
// regexp compilation that cost ~42 % of the CPU per HEAD at region auto).
func TestEndpointResolvedOncePerClient(t *testing.T) {
	t.Parallel()
	cfg, dir := testBucket(t)
	needDir(t, dir)
	counter := &countingResolver{next: s3.NewDefaultEndpointResolverV2()}
	c := newClient(t, cfg)
	// Swap the SDK's rules under the memo for a counting wrapper.
	c.s3.Options().EndpointResolverV2.(*endpointResolver).next = counter
	ctx := ctxT(t)
	if err := c.CheckBucket(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := c.Head(ctx, fmt.Sprintf("missing/%d", i)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("head: %v", err)
		}
	}
	if n := counter.calls.Load(); n != 1 {
		t.Fatalf("the SDK's rules ran %d times for 51 requests, want 1", n)
	}
}

// The worker's fan-out at bench size (N HEADs, 32 at a time, ~1/3 missing)
// against the real server: every answer right, and run under -race (make
// test) it proves that no request writes state another one reads. With the
// removed shared-endpoint cache the race detector fails this test.
func TestFanOutRaceBenchSized(t *testing.T) {
	t.Parallel()
	const n, width, objects = 2400, 32, 60
	cfg, _ := testBucket(t)
	cfg.MaxConcurrency = width
	c := newClient(t, cfg)
	ctx := ctxT(t)
	for i := range objects {
		if i%3 != 0 {
			put(t, c, fmt.Sprintf("u/%03d", i), fmt.Sprint("body ", i), "text/plain")
		}
	}
	keys := make(chan int)
	var found, missing atomic.Int64
	var wg sync.WaitGroup
	for range width {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				key := fmt.Sprintf("u/%03d", i%objects)
				o, err := c.Head(ctx, key)
				switch {
				case i%objects%3 == 0 && errors.Is(err, ErrNotFound):
					missing.Add(1)
				case i%objects%3 != 0 && err == nil && o.Size == int64(len(fmt.Sprint("body ", i%objects))):
					found.Add(1)
				default:
					t.Errorf("head %s: %+v, %v", key, o, err)
				}
			}
		}()
	}
	// Other operations resolve endpoints concurrently with the HEADs.
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 20 {
			if err := c.CheckBucket(ctx); err != nil {
				t.Error(err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 10 {
			if err := c.List(ctx, "u/", func([]Object) error { return nil }); err != nil {
				t.Error(err)
			}
		}
	}()
	for i := range n {
		keys <- i
	}
	close(keys)
	wg.Wait()
	if got := found.Load() + missing.Load(); got != n {
		t.Fatalf("%d of %d HEADs answered right", got, n)
	}
	t.Logf("%d HEADs at concurrency %d: %d found, %d missing", n, width, found.Load(), missing.Load())
}

// BenchmarkResolveEndpoint is the per-request cost of endpoint resolution,
// the SDK's rules against the memo, at region auto (outside the SDK's
// partition table) and us-east-1.
func BenchmarkResolveEndpoint(b *testing.B) {
	for _, region := range []string{"auto", "us-east-1"} {
		cfg := endpointConfigs[0]
		cfg.Region = region
		params := endpointParams(b, cfg, "u/001/0000001")
		for name, r := range map[string]s3.EndpointResolverV2{
			"sdk":  s3.NewDefaultEndpointResolverV2(),
			"memo": newEndpointResolver(s3.NewDefaultEndpointResolverV2()),
		} {
			b.Run(region+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				ctx := context.Background()
				for b.Loop() {
					if _, err := r.ResolveEndpoint(ctx, params); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
