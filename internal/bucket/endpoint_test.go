package bucket

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
)

type countingResolver struct {
	next  s3.EndpointResolverV2
	calls int
}

func (c *countingResolver) ResolveEndpoint(ctx context.Context, p s3.EndpointParameters) (smithyendpoints.Endpoint, error) {
	c.calls++
	return c.next.ResolveEndpoint(ctx, p)
}

// Requests for different keys of one bucket resolve the endpoint once; another bucket is
// resolved on its own.
func TestCachingResolverIgnoresPerObjectParameters(t *testing.T) {
	t.Parallel()
	counter := &countingResolver{next: s3.NewDefaultEndpointResolverV2()}
	r := newCachingResolver()
	r.next = counter
	base := s3.EndpointParameters{Region: aws.String("auto"), Endpoint: aws.String("http://127.0.0.1:9000"), ForcePathStyle: aws.Bool(true)}
	var uris []string
	for _, key := range []string{"a.txt", "b/c.txt", "d e+f.txt"} {
		p := base
		p.Bucket, p.Key = aws.String("uploads"), aws.String(key)
		ep, err := r.ResolveEndpoint(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, ep.URI.String())
	}
	if counter.calls != 1 {
		t.Errorf("3 keys of one bucket resolved %d times, want 1", counter.calls)
	}
	if uris[0] != "http://127.0.0.1:9000/uploads" || uris[1] != uris[0] || uris[2] != uris[0] {
		t.Errorf("endpoints %v", uris)
	}
	p := base
	p.Bucket, p.Prefix = aws.String("other"), aws.String("x/")
	ep, err := r.ResolveEndpoint(context.Background(), p)
	if err != nil || ep.URI.String() != "http://127.0.0.1:9000/other" || counter.calls != 2 {
		t.Errorf("other bucket: %v %v (calls %d)", ep.URI.String(), err, counter.calls)
	}
}
