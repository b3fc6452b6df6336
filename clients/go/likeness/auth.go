package likeness

import (
	"context"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// WithAPIKey makes Dial send key as the metadata `authorization: Bearer <key>` on every call, for servers with
// `auth = "api-key"`. Without this option Dial uses $LIKENESS_API_KEY; an empty key sends none.
func WithAPIKey(key string) grpc.DialOption {
	return apiKeyOption{key: key}
}

// WithTLSCAFile makes Dial connect with TLS, trusting the CA certificates in the PEM file caFile (the CA that
// signed the server's certificate). Without this option Dial uses $LIKENESS_TLS_CA_FILE; an empty path means
// plaintext. WithCredentials takes precedence.
func WithTLSCAFile(caFile string) grpc.DialOption {
	return tlsCAFileOption{caFile: caFile}
}

// WithCredentials makes Dial use these transport credentials, for full control: client certificates for mutual
// TLS, the system roots (credentials.NewTLS(nil)). Use it rather than grpc.WithTransportCredentials, which
// grpc-go before 1.34 refuses next to the grpc.WithInsecure that Dial uses for plaintext.
func WithCredentials(creds credentials.TransportCredentials) grpc.DialOption {
	return credentialsOption{creds: creds}
}

// apiKeyOption, tlsCAFileOption and credentialsOption carry settings for Dial itself; to grpc they are no-ops.
type apiKeyOption struct {
	grpc.EmptyDialOption
	key string
}

type tlsCAFileOption struct {
	grpc.EmptyDialOption
	caFile string
}

type credentialsOption struct {
	grpc.EmptyDialOption
	creds credentials.TransportCredentials
}

// bearerToken is the API key as per-RPC credentials. It requires transport security when Dial turned TLS on,
// so the key is never sent in the clear by mistake; on a plaintext connection (the embedded server, local
// tests) it is sent as is.
type bearerToken struct {
	header     string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": b.header}, nil
}

func (b bearerToken) RequireTransportSecurity() bool {
	return b.requireTLS
}

// securityOptions resolves WithCredentials, WithTLSCAFile and WithAPIKey (or the environment fallbacks) into
// dial options: TLS or plaintext, and per-RPC credentials for the key.
func securityOptions(opts []grpc.DialOption) ([]grpc.DialOption, error) {
	key, caFile := os.Getenv("LIKENESS_API_KEY"), os.Getenv("LIKENESS_TLS_CA_FILE")
	var creds credentials.TransportCredentials
	for _, opt := range opts { // the last of each wins, as with other dial options
		switch o := opt.(type) {
		case apiKeyOption:
			key = o.key
		case tlsCAFileOption:
			caFile = o.caFile
		case credentialsOption:
			creds = o.creds
		}
	}
	if creds == nil && caFile != "" {
		var err error
		if creds, err = credentials.NewClientTLSFromFile(caFile, ""); err != nil {
			return nil, fmt.Errorf("likeness: TLS CA file %s: %w", caFile, err)
		}
	}
	var out []grpc.DialOption
	if creds != nil {
		out = append(out, grpc.WithTransportCredentials(creds))
	} else {
		out = append(out, grpc.WithInsecure())
	}
	if key != "" {
		out = append(out, grpc.WithPerRPCCredentials(bearerToken{header: "Bearer " + key, requireTLS: creds != nil}))
	}
	return out, nil
}
