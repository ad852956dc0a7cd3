"""mgpu_node."""
