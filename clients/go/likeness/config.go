package likeness

import (
	_ "embed" // the service config
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// serviceConfig is a byte-identical copy of clients/service_config.json, the one service config of every
// Likeness SDK (a test fails when the copy differs).
//
//go:embed service_config.json
var serviceConfig string

// ServiceConfig is the gRPC service config (JSON) that Dial installs with grpc.WithDefaultServiceConfig: the
// retry policy (UNAVAILABLE and RESOURCE_EXHAUSTED, exponential backoff, at most 4 attempts; the server's
// grpc-retry-pushback-ms overrides the backoff, a negative one stops retrying) and each call kind's default
// deadline (one for unary calls, a longer one for uploads, generation and downloads, none for watches). A
// deadline on the call's context wins when it is shorter.
//
// grpc-go performs the retries from 1.40 on; before (Debian's 1.33) only when the process runs with the
// environment variable GRPC_GO_RETRY=on. The deadlines apply either way.
func ServiceConfig() string {
	return serviceConfig
}

// UploadRetryBufferBytes is how much of a client stream (a PrepareDataset upload) gRPC keeps to replay it on a
// retry; an upload larger than this is not retried once that much is sent.
const UploadRetryBufferBytes = 4 * 1024 * 1024

// DefaultDialOptions match the server: plaintext (as the embedded server listens by default), the Likeness
// service config, its 64 MiB message limit, and keepalive pings every 30 s (the server accepts one every 10 s)
// so idle training watches survive proxies and load balancers. They are for grpc.DialContext; Dial picks
// plaintext or TLS itself.
func DefaultDialOptions() []grpc.DialOption {
	return append([]grpc.DialOption{grpc.WithTransportCredentials(InsecureCredentials())}, channelOptions()...)
}

// channelOptions are DefaultDialOptions without the transport security.
func channelOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
			grpc.MaxRetryRPCBufferSize(UploadRetryBufferBytes),
			grpc.ForceCodec(Codec{}),
		),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                30 * time.Second,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.WithUserAgent("likeness-go/" + Version),
	}
}
