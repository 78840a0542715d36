"""The Kubernetes API proxy: per-session TLS endpoint for kubectl, judged and forwarded to the real API server."""
