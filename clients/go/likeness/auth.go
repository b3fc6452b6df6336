package likeness

import (
	"context"
	"fmt"
	"net"
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
// TLS, the system roots (credentials.NewTLS(nil)). Prefer it to grpc.WithTransportCredentials: with it Dial
// knows the connection is secure and sends the API key over it only.
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

// insecureProtocol is the SecurityProtocol of InsecureCredentials, as grpc-go's insecure package names it.
const insecureProtocol = "insecure"

// InsecureCredentials are transport credentials without any security: plaintext HTTP/2, as the embedded server
// listens by default. Dial uses them when no TLS is configured. They are what
// google.golang.org/grpc/credentials/insecure.NewCredentials() returns in grpc-go 1.34 and later, for grpc-go
// 1.33, which has neither that package nor a non-deprecated alternative to grpc.WithInsecure. The connection's
// security level is NoSecurity, so credentials that require transport security are refused on it.
func InsecureCredentials() credentials.TransportCredentials {
	return insecureCredentials{}
}

type insecureCredentials struct{}

func (insecureCredentials) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, &insecureAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (insecureCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, &insecureAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (insecureCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: insecureProtocol}
}

func (insecureCredentials) Clone() credentials.TransportCredentials {
	return insecureCredentials{}
}

// OverrideServerName is part of the interface in grpc-go 1.33; there is no server name to check.
func (insecureCredentials) OverrideServerName(string) error {
	return nil
}

// insecureAuthInfo is a pointer AuthInfo so credentials.CheckSecurityLevel sees its NoSecurity level.
type insecureAuthInfo struct {
	credentials.CommonAuthInfo
}

func (*insecureAuthInfo) AuthType() string {
	return insecureProtocol
}

// bearerToken is the API key as per-RPC credentials. It requires transport security when Dial turned TLS on,
// so the key is never sent in the clear by mistake; on a plaintext connection (the embedded server, local
// tests) it is sent as is.
type bearerToken struct {
	header     string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if b.requireTLS {
		// grpc-go 1.33 counts any transport credentials as secure; check the connection's own level too.
		if err := credentials.CheckSecurityLevel(ctx, credentials.PrivacyAndIntegrity); err != nil {
			return nil, fmt.Errorf("likeness: not sending the API key on an insecure connection: %w", err)
		}
	}
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
	secure := creds != nil && creds.Info().SecurityProtocol != insecureProtocol
	if creds == nil {
		creds = InsecureCredentials()
	}
	out := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if key != "" {
		out = append(out, grpc.WithPerRPCCredentials(bearerToken{header: "Bearer " + key, requireTLS: secure}))
	}
	return out, nil
}
