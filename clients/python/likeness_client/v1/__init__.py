"""Generated protobuf and gRPC modules of the Likeness v1 APIs (`make proto`; do not edit)."""
