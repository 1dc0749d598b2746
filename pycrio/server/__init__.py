"""The CRI gRPC server: RPC plumbing, validation, error mapping and the servicers."""
