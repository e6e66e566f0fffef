"""The gRPC server: the RPC pipeline (auth, idempotency, errors, logs) and the service wiring."""
