package likeness

import (
	"fmt"

	protov1 "github.com/golang/protobuf/proto"
	"google.golang.org/protobuf/proto"
)

// Codec is the "proto" gRPC codec, marshalling with the current protobuf API (google.golang.org/protobuf) and
// falling back to the legacy github.com/golang/protobuf API for messages that only implement that one (the
// health-check messages of older grpc-go releases).
//
// Recent grpc-go releases already do this. Older ones built with a github.com/golang/protobuf before 1.4 (as
// Debian's grpc-go 1.33 is) marshal through the legacy API, which panics on the generated Likeness messages
// ("protobuf tag not enough fields"); DefaultDialOptions forces this codec so the client works the same on
// every grpc-go from 1.33 on.
type Codec struct{}

// Marshal encodes v.
func (Codec) Marshal(v interface{}) ([]byte, error) {
	switch message := v.(type) {
	case proto.Message:
		return proto.Marshal(message)
	case protov1.Message:
		return protov1.Marshal(message)
	default:
		return nil, fmt.Errorf("likeness: cannot marshal %T: not a protobuf message", v)
	}
}

// Unmarshal decodes data into v.
func (Codec) Unmarshal(data []byte, v interface{}) error {
	switch message := v.(type) {
	case proto.Message:
		return proto.Unmarshal(data, message)
	case protov1.Message:
		return protov1.Unmarshal(data, message)
	default:
		return fmt.Errorf("likeness: cannot unmarshal into %T: not a protobuf message", v)
	}
}

// Name is the content subtype; "proto" keeps the wire format standard.
func (Codec) Name() string {
	return "proto"
}
