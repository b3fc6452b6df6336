"""Generated protobuf and gRPC code for this API version (see protos/)."""
