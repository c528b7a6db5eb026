package bucket

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithy "github.com/aws/smithy-go"
	smithyauth "github.com/aws/smithy-go/auth"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
)

// maxCachedEndpoints bounds the memo. A Client addresses one bucket with one
// configuration, so it needs a handful of entries (one per distinct set of
// parameters: HeadObject, HeadBucket, ListObjectsV2 and DeleteObjects all bind
// the same ones); beyond the bound, resolution is simply not memoized.
const maxCachedEndpoints = 16

// endpointResolver memoizes the SDK's endpoint resolution and hands every
// request its own deep copy.
//
// Why memoize: for a region outside the SDK's partition table (R2's "auto"),
// the rules engine compiles every partition's region regexp on each
// resolution, and service/s3 resolves twice per request (auth-scheme
// resolution and the endpoint middleware): measured, ~42 % of the worker's CPU
// per HEAD. The result depends only on the client's configuration and the
// bucket, so it is computed once.
//
// Why copy: the SDK writes into what it gets back, per request. The endpoint
// auth resolver rewrites each auth option's SchemeID and replaces its
// IdentityProperties/SignerProperties, and the signing middleware then sets
// the signing name and region in those maps. An earlier cache returned one
// shared Endpoint to every request, and a 32-way fan-out crashed with
// "concurrent map writes". Here the memoized template is never handed out:
// each call gets new Properties, a new auth-option slice with new Options and
// new property maps, and new headers.
//
// Resolution is memoized only when every property value is of a type this
// file knows how to copy; an SDK upgrade that adds anything else falls back
// to resolving per request (slower, never shared).
type endpointResolver struct {
	next s3.EndpointResolverV2

	// cache is replaced, never modified, so reads need no lock; mu serializes
	// writers.
	cache atomic.Pointer[map[endpointKey]smithyendpoints.Endpoint]
	mu    sync.Mutex
}

func newEndpointResolver(next s3.EndpointResolverV2) *endpointResolver {
	r := &endpointResolver{next: next}
	r.cache.Store(&map[endpointKey]smithyendpoints.Endpoint{})
	return r
}

// ResolveEndpoint implements s3.EndpointResolverV2.
func (r *endpointResolver) ResolveEndpoint(ctx context.Context, params s3.EndpointParameters) (smithyendpoints.Endpoint, error) {
	key := keyOf(params)
	if tmpl, ok := (*r.cache.Load())[key]; ok {
		return copyEndpoint(tmpl), nil
	}
	ep, err := r.next.ResolveEndpoint(ctx, params)
	if err != nil {
		return ep, err // not memoized: the next request asks again
	}
	if copyable(ep) {
		r.remember(key, copyEndpoint(ep))
	}
	// The SDK built ep for this call alone; the memo holds a separate copy.
	return ep, nil
}

func (r *endpointResolver) remember(key endpointKey, tmpl smithyendpoints.Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.cache.Load()
	if _, ok := old[key]; ok || len(old) >= maxCachedEndpoints {
		return
	}
	m := make(map[endpointKey]smithyendpoints.Endpoint, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[key] = tmpl
	r.cache.Store(&m)
}

// optString and optBool keep "unset" apart from "" and false: the rules
// treat them differently.
type optString struct {
	v   string
	set bool
}

type optBool int8 // 0 unset, 1 false, 2 true

func ostr(p *string) optString {
	if p == nil {
		return optString{}
	}
	return optString{*p, true}
}

func obool(p *bool) optBool {
	switch {
	case p == nil:
		return 0
	case *p:
		return 2
	}
	return 1
}

// endpointKey is every endpoint parameter except Key, Prefix and CopySource.
// Those three vary per request, and the rules of the service/s3 version in
// go.mod never read them (TestEndpointIgnoresPerObjectParams checks that
// against the SDK itself, so an upgrade that starts reading them fails the
// tests instead of serving a wrong endpoint). Keying on them would make every
// HEAD a miss.
type endpointKey struct {
	bucket, region, endpoint optString

	useFIPS, useDualStack, forcePathStyle, accelerate, useGlobalEndpoint,
	useObjectLambdaEndpoint, disableAccessPoints, disableMultiRegionAccessPoints,
	useArnRegion, useS3ExpressControlEndpoint, disableS3ExpressSessionAuth optBool
}

func keyOf(p s3.EndpointParameters) endpointKey {
	return endpointKey{
		bucket:                         ostr(p.Bucket),
		region:                         ostr(p.Region),
		endpoint:                       ostr(p.Endpoint),
		useFIPS:                        obool(p.UseFIPS),
		useDualStack:                   obool(p.UseDualStack),
		forcePathStyle:                 obool(p.ForcePathStyle),
		accelerate:                     obool(p.Accelerate),
		useGlobalEndpoint:              obool(p.UseGlobalEndpoint),
		useObjectLambdaEndpoint:        obool(p.UseObjectLambdaEndpoint),
		disableAccessPoints:            obool(p.DisableAccessPoints),
		disableMultiRegionAccessPoints: obool(p.DisableMultiRegionAccessPoints),
		useArnRegion:                   obool(p.UseArnRegion),
		useS3ExpressControlEndpoint:    obool(p.UseS3ExpressControlEndpoint),
		disableS3ExpressSessionAuth:    obool(p.DisableS3ExpressSessionAuth),
	}
}

// copyable reports whether copyEndpoint yields an endpoint that shares
// nothing mutable with ep.
func copyable(ep smithyendpoints.Endpoint) bool {
	for _, v := range ep.Properties.Values() {
		if opts, ok := v.([]*smithyauth.Option); ok {
			for _, o := range opts {
				if o == nil || !plainProperties(&o.IdentityProperties) || !plainProperties(&o.SignerProperties) {
					return false
				}
			}
			continue
		}
		if !plainValue(v) {
			return false
		}
	}
	return true
}

func plainProperties(p *smithy.Properties) bool {
	for _, v := range p.Values() {
		if !plainValue(v) {
			return false
		}
	}
	return true
}

// plainValue: values that are immutable (or, for []string, copied by
// copyValue). The SDK's endpoint properties today are the auth options, the
// "backend" string, and in the options signing name/region strings, the
// disableDoubleEncoding bool and SigV4a's region list.
func plainValue(v any) bool {
	switch v.(type) {
	case nil, string, bool, int, int32, int64, float64, []string:
		return true
	}
	return false
}

func copyValue(v any) any {
	if s, ok := v.([]string); ok {
		return slices.Clone(s)
	}
	return v
}

func copyProperties(src *smithy.Properties) smithy.Properties {
	var dst smithy.Properties
	for k, v := range src.Values() {
		if opts, ok := v.([]*smithyauth.Option); ok {
			v = copyAuthOptions(opts)
		} else {
			v = copyValue(v)
		}
		dst.Set(k, v)
	}
	return dst
}

func copyAuthOptions(opts []*smithyauth.Option) []*smithyauth.Option {
	out := make([]*smithyauth.Option, len(opts))
	for i, o := range opts {
		out[i] = &smithyauth.Option{
			SchemeID:           o.SchemeID,
			IdentityProperties: copyProperties(&o.IdentityProperties),
			SignerProperties:   copyProperties(&o.SignerProperties),
		}
	}
	return out
}

// copyEndpoint deep-copies ep: URI by value (its Userinfo is immutable),
// headers cloned, properties and auth options rebuilt.
func copyEndpoint(ep smithyendpoints.Endpoint) smithyendpoints.Endpoint {
	return smithyendpoints.Endpoint{
		URI:        ep.URI,
		Headers:    ep.Headers.Clone(),
		Properties: copyProperties(&ep.Properties),
	}
}
