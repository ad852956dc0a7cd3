"""mgpu_client."""
