"""The messages of users' persistent workspaces (``mgpu_client workspace list|rm``): the
client asks the master, the master asks the nodes (``workspace``), each node answers
(``workspace_data``). messages.py merges these tables into its own.
"""

from __future__ import annotations

from mgpu_core.limits import ID, MAX_MESSAGE_LEN, MAX_PATH_LEN, NAME
from mgpu_core.schema import REQUIRED, Bool, Float, Int, ListOf, OneOf, Record, Str

# One node's answer to a workspace listing: at most this many (by user name), so that even
# with the longest paths the answer stays far below a frame's 16 MiB.
MAX_WORKSPACES = 1024

# One workspace in a node's workspace_data (mgpu_node/workspaces.py).
WORKSPACE = Record(
    {
        "user": (NAME, REQUIRED),
        "path": (Str(MAX_PATH_LEN), ""),
        "used_bytes": (Int(0, 2**62), 0),  # on disk, as du counts
        "complete": (Bool(), True),  # False: measuring was cut short; used_bytes is at least
        "over_quota": (Bool(), False),  # used_bytes reached the node's --workspace-quota
        "modified_s": (Float(), 0.0),  # the directory's mtime
    }
)

CLIENT_WORKSPACE_REQUESTS: dict[str, Record] = {
    # List them (user "": everyone's an admin may see), or remove one user's; on one node
    # ("": every node).
    "workspace": Record(
        {
            "id": (ID, REQUIRED),
            "action": (OneOf("list", "rm"), REQUIRED),
            "node": (NAME, ""),
            "user": (NAME, ""),
        }
    ),
}

MASTER_WORKSPACE_ORDERS: dict[str, Record] = {
    # A client's list or rm (the master checked who asks, and that no job of the user runs on
    # a node that shares the root); answered with workspace_data.
    "workspace": Record(
        {
            "req": (ID, REQUIRED),
            "action": (OneOf("list", "rm"), REQUIRED),
            "user": (NAME, ""),  # list: "" = everyone's; rm: required
        }
    ),
}

NODE_WORKSPACE_MESSAGES: dict[str, Record] = {
    # The answer to a workspace order: the root, its filesystem's space, the workspaces
    # listed, or the one removed; or why not.
    "workspace_data": Record(
        {
            "req": (ID, REQUIRED),
            "root": (Str(MAX_PATH_LEN), ""),
            "free_bytes": (Int(-1, 2**62), -1),  # -1: not measured (an rm)
            "total_bytes": (Int(-1, 2**62), -1),
            "quota_bytes": (Int(0, 2**62), 0),  # --workspace-quota; 0: none
            "workspaces": (ListOf(WORKSPACE, MAX_WORKSPACES), list),
            "removed": (Str(MAX_PATH_LEN), ""),  # rm: the path removed; "": there was none
            "error": (Str(MAX_MESSAGE_LEN), ""),
        }
    ),
}
