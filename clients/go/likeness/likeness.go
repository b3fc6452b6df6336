// Package likeness connects to the Likeness services (trainer, inference, gallery) and helps with the parts of
// the API that are awkward over raw stubs: reassembling streamed image chunks and resuming a training watch
// after a dropped connection.
//
//	c, err := likeness.Dial("127.0.0.1:50051")
//	if err != nil { ... }
//	defer c.Close()
//	stream, err := c.Inference.GenerateImages(ctx, &inferencev1.GenerateImagesRequest{Prompt: "a photo of {subject}"})
//	result, err := likeness.CollectImages(stream, nil)
//
// Over TLS with an API key: likeness.Dial(address, likeness.WithTLSCAFile("ca.pem"), likeness.WithAPIKey(key)),
// or set $LIKENESS_TLS_CA_FILE and $LIKENESS_API_KEY.
//
// The generated packages live under gen/likeness/<service>/v1.
package likeness

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	galleryv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/gallery/v1"
	inferencev1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/inference/v1"
	trainerv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/trainer/v1"
)

// DefaultAddress is dialled when the address is empty and $LIKENESS_ADDRESS is unset.
const DefaultAddress = "127.0.0.1:50051"

// MaxMessageBytes is the server's default message-size limit; generated images must fit in one message.
const MaxMessageBytes = 64 * 1024 * 1024

// Version of this client, sent in the user agent.
const Version = "0.1.0"

// Clients holds one connection and the service clients that share it.
type Clients struct {
	Conn      *grpc.ClientConn
	Trainer   trainerv1.TrainerServiceClient
	Inference inferencev1.InferenceServiceClient
	Gallery   galleryv1.GalleryServiceClient
	Health    grpc_health_v1.HealthClient
}

// DefaultDialOptions match the server: plaintext (as the embedded server listens by default), its 64 MiB
// message limit, and keepalive pings every 30 s (the server accepts one every 10 s) so idle training watches
// survive proxies and load balancers. They are for grpc.Dial; Dial picks plaintext or TLS itself.
func DefaultDialOptions() []grpc.DialOption {
	return append([]grpc.DialOption{grpc.WithInsecure()}, channelOptions()...)
}

// channelOptions are DefaultDialOptions without the transport security.
func channelOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
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

// Dial connects to address (empty: $LIKENESS_ADDRESS, else DefaultAddress). The connection is made lazily;
// use WaitUntilServing to block until the server is ready.
//
// WithTLSCAFile (default $LIKENESS_TLS_CA_FILE) connects with TLS, trusting that CA, and WithCredentials with
// any transport credentials; without either the connection is plaintext. WithAPIKey (default
// $LIKENESS_API_KEY) sends the key as `authorization: Bearer <key>` on every call; over TLS it is never sent
// on a connection without transport security. Other grpc options are applied after the defaults (the options
// of DefaultDialOptions), so they override them.
//
// Dial uses grpc.Dial and grpc.WithInsecure rather than grpc.NewClient and the insecure package, which
// grpc-go 1.33 (the oldest supported, Debian's) lacks.
func Dial(address string, opts ...grpc.DialOption) (*Clients, error) {
	if address == "" {
		address = os.Getenv("LIKENESS_ADDRESS")
	}
	if address == "" {
		address = DefaultAddress
	}
	security, err := securityOptions(opts)
	if err != nil {
		return nil, err
	}
	all := append(append(channelOptions(), security...), opts...)
	conn, err := grpc.Dial(address, all...)
	if err != nil {
		return nil, fmt.Errorf("likeness: dial %s: %w", address, err)
	}
	return &Clients{
		Conn:      conn,
		Trainer:   trainerv1.NewTrainerServiceClient(conn),
		Inference: inferencev1.NewInferenceServiceClient(conn),
		Gallery:   galleryv1.NewGalleryServiceClient(conn),
		Health:    grpc_health_v1.NewHealthClient(conn),
	}, nil
}

// Close closes the connection; calls in flight fail with Canceled.
func (c *Clients) Close() error {
	return c.Conn.Close()
}

// IsServing reports whether the health check says SERVING for service ("" for the whole server, or for example
// "likeness.inference.v1.InferenceService"). It is false while the server loads models or drains.
func (c *Clients) IsServing(ctx context.Context, service string) (bool, error) {
	response, err := c.Health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: service})
	if err != nil {
		return false, err
	}
	return response.GetStatus() == grpc_health_v1.HealthCheckResponse_SERVING, nil
}

// WaitUntilServing polls the health check until it reports SERVING or ctx ends.
func (c *Clients) WaitUntilServing(ctx context.Context, service string) error {
	for {
		serving, err := c.IsServing(ctx, service)
		if serving {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("likeness: server not serving: %w", err)
			}
			return fmt.Errorf("likeness: server not serving: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
