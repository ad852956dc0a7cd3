"""mgpu core: what the master, the node agent and the clients share.

Nothing in this package imports from mgpu_server, mgpu_node or mgpu_client.
"""

__version__ = "0.1.0"
