package bucket

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
)

// cachingResolver memoizes the SDK's endpoint rules. With R2's region "auto", which is in
// no AWS partition's region list, the rules compile every partition's region regexp on
// every request (awsrulesfn.getPartition): a third of a HEAD fan-out's CPU and most of an
// idle leader's allocations. One client talks to one bucket, so the parameters, and the
// endpoint they resolve to, repeat.
type cachingResolver struct {
	next s3.EndpointResolverV2
	mu   sync.RWMutex
	m    map[string]smithyendpoints.Endpoint
}

func newCachingResolver() *cachingResolver {
	return &cachingResolver{next: s3.NewDefaultEndpointResolverV2(), m: map[string]smithyendpoints.Endpoint{}}
}

// maxCached bounds the cache; parameters vary only with the bucket and a few flags.
const maxCached = 64

func (r *cachingResolver) ResolveEndpoint(ctx context.Context, p s3.EndpointParameters) (smithyendpoints.Endpoint, error) {
	// Key, Prefix and CopySource are per request but no input of the S3 endpoint rules
	// (service/s3 declares them and never reads them): leave them out of the cache key, or
	// every object would be a new entry.
	k := p
	k.Key, k.Prefix, k.CopySource = nil, nil, nil
	b, err := json.Marshal(k) // pointers marshal as their values: a full, stable key
	if err != nil {
		return r.next.ResolveEndpoint(ctx, p)
	}
	key := string(b)
	r.mu.RLock()
	ep, ok := r.m[key]
	r.mu.RUnlock()
	if ok {
		return ep, nil
	}
	ep, err = r.next.ResolveEndpoint(ctx, p)
	if err != nil {
		return ep, err
	}
	r.mu.Lock()
	if len(r.m) < maxCached {
		r.m[key] = ep
	}
	r.mu.Unlock()
	return ep, nil
}
