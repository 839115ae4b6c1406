// AWS calls with the AWS SDK for Go v2 (Debian's golang-github-aws-aws-sdk-go-v2-dev)
// over Go's own crypto/tls; prints one JSON line.
// usage: go_sdk URL CERT h1|h2 OPERATION [ARG]
//   OPERATION: list_buckets | delete_bucket NAME | terminate ID | describe
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func main() {
	url, certFile, proto, operation := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	pem, err := os.ReadFile(certFile)
	check(err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: proto == "h2",
	}
	config := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		HTTPClient:  &http.Client{Transport: transport},
		EndpointResolverWithOptions: aws.EndpointResolverWithOptionsFunc(
			func(service, region string, options ...interface{}) (aws.Endpoint, error) {
				return aws.Endpoint{URL: url, HostnameImmutable: true, SigningRegion: region}, nil
			}),
	}
	ctx := context.Background()
	var out interface{}
	switch operation {
	case "list_buckets":
		listed, err := s3.NewFromConfig(config).ListBuckets(ctx, &s3.ListBucketsInput{})
		check(err)
		names := []string{}
		for _, bucket := range listed.Buckets {
			names = append(names, *bucket.Name)
		}
		out = names
	case "delete_bucket":
		_, err := s3.NewFromConfig(config).DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(os.Args[5])})
		check(err)
	case "describe":
		described, err := ec2.NewFromConfig(config).DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		check(err)
		states := map[string]string{}
		for _, reservation := range described.Reservations {
			for _, instance := range reservation.Instances {
				states[*instance.InstanceId] = string(instance.State.Name)
			}
		}
		out = states
	case "terminate":
		_, err := ec2.NewFromConfig(config).TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{os.Args[5]}})
		check(err)
	}
	line, _ := json.Marshal(map[string]interface{}{"ok": true, "out": out, "proto": proto})
	fmt.Println(string(line))
}

func check(err error) {
	if err != nil {
		line, _ := json.Marshal(map[string]interface{}{"ok": false, "error": err.Error()})
		fmt.Println(string(line))
		os.Exit(1)
	}
}
