"""The gRPC server: interceptors, error mapping and the service wiring."""
