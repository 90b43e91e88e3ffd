"""The gRPC adapter: authentication, the error table, message conversion and the servicers."""
