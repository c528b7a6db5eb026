package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/bg-worker/bg-worker/internal/devservers"
)

// BucketInfo says how to reach a test's bucket.
type BucketInfo struct {
	Endpoint        string // e.g. http://127.0.0.1:PORT; address it path-style
	Region          string // signing region
	AccessKeyID     string
	SecretAccessKey string
	Name            string // the bucket
	// Dir is the bucket's directory on disk when the server is the local versitygw (each
	// file below it is an object), "" when the server is external (TEST_S3_ENDPOINT).
	Dir string
}

// s3Server is the shared S3 server: the local versitygw or TEST_S3_ENDPOINT.
type s3Server struct {
	endpoint, region, access, secret string
	dataDir                          string // local only
}

var sharedS3 struct {
	once sync.Once
	srv  *s3Server
	err  error
}

func sharedS3Server() (*s3Server, error) {
	sharedS3.once.Do(func() {
		if ep := os.Getenv("TEST_S3_ENDPOINT"); ep != "" {
			srv := &s3Server{
				endpoint: ep,
				region:   os.Getenv("TEST_S3_REGION"),
				access:   os.Getenv("TEST_S3_ACCESS_KEY_ID"),
				secret:   os.Getenv("TEST_S3_SECRET_ACCESS_KEY"),
			}
			if srv.region == "" {
				srv.region = "auto"
			}
			if srv.access == "" || srv.secret == "" {
				sharedS3.err = errors.New("TEST_S3_ENDPOINT needs TEST_S3_ACCESS_KEY_ID and TEST_S3_SECRET_ACCESS_KEY")
				return
			}
			sharedS3.srv = srv
			return
		}
		v, err := startVersitygw()
		if err != nil {
			sharedS3.err = err
			return
		}
		onTeardown(func() { _ = v.Stop() })
		sharedS3.srv = &s3Server{endpoint: v.Endpoint, region: v.Region, access: v.AccessKey, secret: v.SecretKey, dataDir: v.DataDir}
	})
	return sharedS3.srv, sharedS3.err
}

// startVersitygw starts the local S3 server: versitygw's posix backend serving a temp
// directory, from the binary devservers.VersitygwBinary finds or builds.
func startVersitygw() (*devservers.Versitygw, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	bin, err := devservers.VersitygwBinary(ctx)
	if err != nil {
		return nil, fmt.Errorf("versitygw: %w", err)
	}
	return devservers.StartVersitygw(ctx, devservers.VersitygwOptions{Bin: bin, Pattern: "testenv-s3-"})
}

// Bucket creates a fresh, uniquely named bucket on the shared S3 server and returns how to
// reach it. It is emptied and deleted (best effort) in t.Cleanup.
func Bucket(t testing.TB) BucketInfo {
	t.Helper()
	srv, err := sharedS3Server()
	if err != nil {
		unavailable(t, err)
	}
	name := "t-"
	if n := nameFor(t, '-', 40); n != "" {
		name += n + "-"
	}
	name += randomHex(5)
	info := BucketInfo{
		Endpoint:        srv.endpoint,
		Region:          srv.region,
		AccessKeyID:     srv.access,
		SecretAccessKey: srv.secret,
		Name:            name,
	}
	if srv.dataDir != "" {
		info.Dir = filepath.Join(srv.dataDir, name)
	}
	client := newS3Client(info)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("testenv: create bucket %s at %s: %v", name, srv.endpoint, err)
	}
	t.Cleanup(func() {
		if err := deleteBucket(client, info); err != nil {
			t.Logf("testenv: delete bucket %s: %v", name, err)
		}
	})
	return info
}

// S3Client returns an S3 client for the bucket's server, for seeding and checking objects
// in tests: path-style addressing, static credentials, and checksums only where the API
// requires them (what S3-compatible stores accept).
func S3Client(t testing.TB, info BucketInfo) *s3.Client {
	t.Helper()
	return newS3Client(info)
}

func newS3Client(info BucketInfo) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint:               aws.String(info.Endpoint),
		Region:                     info.Region,
		Credentials:                credentials.NewStaticCredentialsProvider(info.AccessKeyID, info.SecretAccessKey, ""),
		UsePathStyle:               true,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// deleteBucket removes a test's bucket: on the local server by removing its directory
// (which also takes files written there directly and unfinished multipart uploads), on
// an external one by deleting every object and then the bucket.
func deleteBucket(client *s3.Client, info BucketInfo) error {
	if info.Dir != "" {
		return os.RemoveAll(info.Dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket := aws.String(info.Name)
	uploads, err := client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: bucket})
	if err == nil {
		for _, u := range uploads.Uploads {
			_, _ = client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: bucket, Key: u.Key, UploadId: u.UploadId})
		}
	}
	pages := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: bucket})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list objects: %w", err)
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, 0, len(page.Contents))
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		out, err := client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: bucket,
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		})
		if err != nil {
			return fmt.Errorf("delete objects: %w", err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("delete objects: %d failed, first %s: %s", len(out.Errors), aws.ToString(e.Key), aws.ToString(e.Message))
		}
	}
	_, err = client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: bucket})
	return err
}
