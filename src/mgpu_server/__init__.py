"""mgpu_server."""
