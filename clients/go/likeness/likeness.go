// Package likeness connects to the Likeness services (trainer, inference, gallery) and wraps the parts of the
// API that are awkward over raw stubs: uploading photos in chunks, resuming a training watch after a dropped
// connection, reassembling streamed image chunks, downloading a subject model's files, and errors that carry
// the server's details.
//
//	c, err := likeness.Dial("127.0.0.1:50051") // one address for all three services
//	if err != nil { ... }
//	defer c.Close()
//	prepared, err := c.PrepareDataset(ctx, likeness.PhotoFiles(paths...), &trainerv1.DatasetOptions{})
//	created, err := c.CreateTrainingJob(ctx, &trainerv1.CreateTrainingJobRequest{Spec: spec})
//	err = c.WatchTrainingJob(ctx, created.Job.JobId, 0, func(e *trainerv1.WatchTrainingJobResponse) error { ... })
//	result, err := c.Generate(ctx, &inferencev1.GenerateImagesRequest{Prompt: "a photo of {subject}"}, nil)
//
// Over TLS with an API key: likeness.Dial(address, likeness.WithTLSCAFile("ca.pem"), likeness.WithAPIKey(key)),
// or set $LIKENESS_TLS_CA_FILE and $LIKENESS_API_KEY. Services behind different addresses:
// WithTrainerAddress, WithInferenceAddress, WithGalleryAddress.
//
// Retries (UNAVAILABLE, RESOURCE_EXHAUSTED, honouring the server's grpc-retry-pushback-ms) and per-method
// deadlines come from the gRPC service config shared by every Likeness SDK (ServiceConfig). grpc-go before
// 1.40 performs retries only when the environment has GRPC_GO_RETRY=on.
//
// The generated packages live under gen/likeness/<service>/v1; the stubs stay available as c.Trainer,
// c.Inference and c.Gallery.
package likeness

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"

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

// Full names of the services, as the health check and the service config name them.
const (
	TrainerService   = "likeness.trainer.v1.TrainerService"
	InferenceService = "likeness.inference.v1.InferenceService"
	GalleryService   = "likeness.gallery.v1.GalleryService"
)

// Endpoints is where each service is. All three are the same address unless a layout splits them.
type Endpoints struct {
	Trainer, Inference, Gallery string
}

// Clients holds the connections and the service clients that use them. Services behind one address share one
// connection.
type Clients struct {
	// Endpoints the connections were dialled to.
	Endpoints Endpoints
	// Conn is the trainer's connection: the only one when all services share an address.
	Conn *grpc.ClientConn
	// The connection of each service (the same one for services that share an address).
	TrainerConn, InferenceConn, GalleryConn *grpc.ClientConn

	Trainer   trainerv1.TrainerServiceClient
	Inference inferencev1.InferenceServiceClient
	Gallery   galleryv1.GalleryServiceClient
	// Health is the trainer's health service; IsServing asks each service's own address.
	Health grpc_health_v1.HealthClient
}

// WithTrainerAddress makes Dial reach the trainer at address instead of the shared one (default
// $LIKENESS_TRAINER_ADDRESS).
func WithTrainerAddress(address string) grpc.DialOption {
	return addressOption{service: "trainer", address: address}
}

// WithInferenceAddress makes Dial reach the inference service at address instead of the shared one (default
// $LIKENESS_INFERENCE_ADDRESS).
func WithInferenceAddress(address string) grpc.DialOption {
	return addressOption{service: "inference", address: address}
}

// WithGalleryAddress makes Dial reach the gallery at address instead of the shared one (default
// $LIKENESS_GALLERY_ADDRESS).
func WithGalleryAddress(address string) grpc.DialOption {
	return addressOption{service: "gallery", address: address}
}

// addressOption carries a per-service address for Dial; to grpc it is a no-op.
type addressOption struct {
	grpc.EmptyDialOption
	service, address string
}

// ResolveEndpoints is where Dial connects: address (empty: $LIKENESS_ADDRESS, else DefaultAddress) for every
// service, unless WithTrainerAddress / WithInferenceAddress / WithGalleryAddress or $LIKENESS_TRAINER_ADDRESS,
// $LIKENESS_INFERENCE_ADDRESS, $LIKENESS_GALLERY_ADDRESS name another one for it.
func ResolveEndpoints(address string, opts ...grpc.DialOption) Endpoints {
	if address == "" {
		address = os.Getenv("LIKENESS_ADDRESS")
	}
	if address == "" {
		address = DefaultAddress
	}
	given := map[string]string{}
	for _, opt := range opts {
		if o, ok := opt.(addressOption); ok && o.address != "" {
			given[o.service] = o.address
		}
	}
	pick := func(service string) string {
		if a := given[service]; a != "" {
			return a
		}
		if a := os.Getenv("LIKENESS_" + strings.ToUpper(service) + "_ADDRESS"); a != "" {
			return a
		}
		return address
	}
	return Endpoints{Trainer: pick("trainer"), Inference: pick("inference"), Gallery: pick("gallery")}
}

// Dial connects to the services at address (empty: $LIKENESS_ADDRESS, else DefaultAddress); see
// ResolveEndpoints for per-service addresses. Connections are made lazily (no blocking dial); use
// WaitUntilServing to wait until the server is ready.
//
// The channels carry DefaultDialOptions: the service config (retries and deadlines), keepalive, the message
// limit. WithTLSCAFile (default $LIKENESS_TLS_CA_FILE) connects with TLS, trusting that CA, and WithCredentials
// with any transport credentials; without either the connection is plaintext. WithAPIKey (default
// $LIKENESS_API_KEY) sends the key as `authorization: Bearer <key>` on every call; over TLS it is never sent on a
// connection without transport security. Other grpc options are applied after the defaults, so they override
// them (grpc.WithDefaultServiceConfig replaces the Likeness one).
//
// Dial uses grpc.DialContext, the non-deprecated way to create a channel in grpc-go 1.33 (the oldest supported,
// Debian's); grpc.NewClient is its equivalent in grpc-go 1.63 and later.
func Dial(address string, opts ...grpc.DialOption) (*Clients, error) {
	endpoints := ResolveEndpoints(address, opts...)
	security, err := securityOptions(opts)
	if err != nil {
		return nil, err
	}
	all := append(append(channelOptions(), security...), opts...)
	conns := map[string]*grpc.ClientConn{}
	connect := func(target string) (*grpc.ClientConn, error) {
		if conn, ok := conns[target]; ok {
			return conn, nil
		}
		// Without grpc.WithBlock the context only bounds the setup, which does not wait for the network.
		conn, err := grpc.DialContext(context.Background(), target, all...)
		if err != nil {
			return nil, fmt.Errorf("likeness: dial %s: %w", target, err)
		}
		conns[target] = conn
		return conn, nil
	}
	c := &Clients{Endpoints: endpoints}
	for _, step := range []struct {
		target string
		conn   **grpc.ClientConn
	}{{endpoints.Trainer, &c.TrainerConn}, {endpoints.Inference, &c.InferenceConn}, {endpoints.Gallery, &c.GalleryConn}} {
		conn, err := connect(step.target)
		if err != nil {
			for _, opened := range conns {
				opened.Close()
			}
			return nil, err
		}
		*step.conn = conn
	}
	c.Conn = c.TrainerConn
	c.Trainer = trainerv1.NewTrainerServiceClient(c.TrainerConn)
	c.Inference = inferencev1.NewInferenceServiceClient(c.InferenceConn)
	c.Gallery = galleryv1.NewGalleryServiceClient(c.GalleryConn)
	c.Health = grpc_health_v1.NewHealthClient(c.TrainerConn)
	return c, nil
}

// conns is each distinct connection once, in service order.
func (c *Clients) conns() []*grpc.ClientConn {
	var out []*grpc.ClientConn
	for _, conn := range []*grpc.ClientConn{c.TrainerConn, c.InferenceConn, c.GalleryConn} {
		seen := conn == nil
		for _, known := range out {
			seen = seen || known == conn
		}
		if !seen {
			out = append(out, conn)
		}
	}
	if len(out) == 0 && c.Conn != nil {
		out = append(out, c.Conn)
	}
	return out
}

// Close closes the connections; calls in flight fail with Canceled.
func (c *Clients) Close() error {
	var first error
	for _, conn := range c.conns() {
		if err := conn.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// IsServing reports whether the health check says SERVING for service, for example InferenceService (asked at
// that service's address), or "" for every address. It is false while the server loads models or drains.
func (c *Clients) IsServing(ctx context.Context, service string) (bool, error) {
	var conns []*grpc.ClientConn
	switch service {
	case TrainerService:
		conns = []*grpc.ClientConn{c.TrainerConn}
	case InferenceService:
		conns = []*grpc.ClientConn{c.InferenceConn}
	case GalleryService:
		conns = []*grpc.ClientConn{c.GalleryConn}
	default:
		conns = c.conns()
	}
	for _, conn := range conns {
		health := c.Health
		if conn != nil {
			health = grpc_health_v1.NewHealthClient(conn)
		}
		response, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: service})
		if err != nil {
			return false, err
		}
		if response.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
			return false, nil
		}
	}
	return true, nil
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
