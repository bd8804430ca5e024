"""``groundwire bench``: a gRPC load generator beside the direct calls it wraps."""
