"""Every name mgpu gives a file, a directory or a stored setting, and the defaults that more
than one module must agree on: one home, so a rename or a new default is one edit (as arq's
constants.py). The daemons' configuration (mgpu_core.daemons) takes its defaults from here and
the command lines show them; nothing else spells these values out.

Only literals: clients import this at every start.
"""

# -- Where things live by default ------------------------------------------------------------
# A master run by root keeps its state here; others under ~/.local/state/mgpu/MASTER_DIR.
SYSTEM_STATE_DIR = "/var/lib/mgpu"
# System-wide client config, CA certificate, and the cluster key a node reads by default.
SYSTEM_CONFIG_DIR = "/etc/mgpu"
SYSTEM_CONFIG = SYSTEM_CONFIG_DIR + "/config.toml"
SYSTEM_KEY_FILE = SYSTEM_CONFIG_DIR + "/cluster.key"
# What `mgpu_node join` writes into a node's config directory (SYSTEM_CONFIG_DIR as root, else
# ~/.config/APP_DIR): the node's own key (0600), the master's address and the node's id.
NODE_KEY_FILE = "node.key"
NODE_CONFIG_FILE = "node.toml"
# `mgpu_node join --install-service`: the agent's systemd unit, and where it goes.
SYSTEMD_UNIT = "mgpu-node.service"
SYSTEMD_UNIT_DIR = "/etc/systemd/system"
# Under $XDG_STATE_HOME (~/.local/state) and $XDG_CONFIG_HOME (~/.config).
APP_DIR = "mgpu"
USER_CONFIG_FILE = "config.toml"
USER_TOKEN_FILE = "token"  # a user's token for TCP logins (mgpu_core.auth)
MASTER_DIR = "master"  # a user's master state; also the master's directory in local mode
NODE_DIR_PREFIX = "node-"  # a user's agent state: node-<node id>
LOCAL_DIR = "local"  # mgpu_client local: MASTER_DIR/, LOCAL_NODE_DIR/, <name>.pid, <name>.log
LOCAL_NODE_DIR = "node"

# -- The master's state directory --------------------------------------------------------------
KEY_FILE = "cluster.key"  # the cluster key, mode 0600; copied to each node
SOCKET_FILE = "master.sock"  # clients on the master's host connect here without a token
DB_FILE = "mgpu.db"  # the SQLite store (with its -wal and -shm files)
AUDIT_FILE = "audit.log"  # who did what from where (mgpu.audit logger)
TLS_DIR = "tls"  # made by mgpu_master init:
CA_CERT_FILE = "ca.pem"  # copied to every node and client host
CA_KEY_FILE = "ca.key"  # stays on the master
MASTER_CERT_FILE = "master.pem"
MASTER_KEY_FILE = "master.key"
# Where a system master's clients find its socket.
SYSTEM_SOCKET = SYSTEM_STATE_DIR + "/" + SOCKET_FILE

# -- Keys of the master's stored settings (the store's key-value table) ------------------------
TURNS_KEY = "gpu_turns"  # the GPU turn queue: rotation, mode, position
TOKENS_KEY = "tokens"  # users' TCP tokens (ids, secrets, who made them)
JOIN_TOKENS_KEY = "join_tokens"  # mgpu_master join-token's tokens (ids, secrets, expiry, uses)
NODE_KEYS_KEY = "node_keys"  # each joined node's own key, by node id (mgpu_node join)

# -- The node agent's state directory ---------------------------------------------------------
# [history] defaults: finished jobs in the master's memory (Slurm's MinJobAge), in its database.
KEEP_FINISHED_S = 300.0
HISTORY_RETENTION_S = 90 * 86_400.0
# A batch job's output file when it names none (in its working directory; %j: its id).
DEFAULT_BATCH_OUTPUT = "mgpu-%j.out"
AGENT_LOCK_FILE = "agent.lock"  # one agent per directory
EXITS_DIR = "exits"  # unacknowledged job exits ...
EXIT_JOURNAL_FILE = "journal"  # ... appended here
JOBS_DIR = "jobs"  # <job id>.json records of running jobs, <job id>.status from the wrapper
SCRIPTS_DIR = "spool"  # job-<job id>.sh batch scripts
OUTPUT_DIR = "output"  # <job id>.<offset> segments of interactive jobs' output (replayed)
FAKE_GPU_FAULT_FILE = "fake-gpu-faults"  # faults injected into fake GPUs (tests, demos)
FAKE_GPU_DEV_DIR = "dev"  # nvidia<i>: fake GPUs' device nodes, for the devices cgroup
LEASE_FILE = "lease"  # until when the jobs may run without word from the master (the fence)
GUARD_PID_FILE = "guard.pid"  # the fence guard, which outlives the agent
GUARD_LOG_FILE = "guard.log"  # one line per thing the guard did
WORKSPACES_DIR = "workspaces"  # the users' workspaces when --workspace-root is not given
# -- In a workspace root (mgpu_node/workspaces.py) ----------------------------------------------
WORKSPACE_ROOT_ID_FILE = ".mgpu-root-id"  # the root's id: nodes that read the same share it
WORKSPACE_REMOVING_PREFIX = ".mgpu-removing-"  # a removed workspace, renamed aside, being deleted

# -- Keys of the client config file (config.toml) ----------------------------------------------
CONFIG_MASTER = "master"  # HOST:PORT or unix:PATH
CONFIG_SOCKET = "socket"  # the master's Unix socket on this host
CONFIG_TLS_CA = "tls_ca"  # the cluster's CA certificate

# -- Daemon defaults (mgpu_core.daemons; the wire's launch default too) -------------------------
HELLO_TIMEOUT_S = 10.0  # a new connection's time to say hello
NODE_TIMEOUT_S = 15.0  # node silence before it is "not responding" (no new jobs there)
# A node that cannot reach the master kills its jobs after this long (the fence, enforced by a
# guard process that outlives the agent); only after it (plus the kill grace and a margin) does
# the master take them for lost and requeue them. Slurm's SlurmdTimeout is 300 s too: a network
# blip of a minute never kills or requeues a week-long training run.
FENCE_TIMEOUT_S = 300.0
KILL_GRACE_S = 10.0  # SIGTERM to SIGKILL on cancel
JOIN_TOKEN_TTL_S = 3600.0  # how long a join token lasts unless --ttl says otherwise
HEARTBEAT_INTERVAL_S = 5.0
MAX_CONNECTIONS = 4096  # open connections in total (nodes and clients) ...
# ... from one network (an IPv4 /24, an IPv6 /64, one loopback address, one Unix socket user)
MAX_CONNECTIONS_PER_ADDRESS = 512
MAX_UNAUTHENTICATED_PER_ADDRESS = 128  # ... of them not authenticated yet
# Per user (admins excepted; the master's [limits]): pending jobs, and submits per second
# with the burst a user may send at once (a token bucket).
MAX_PENDING_JOBS_PER_USER = 10_000
SUBMIT_RATE_PER_S = 200.0
SUBMIT_BURST = 2_000
# The audit log keeps the first AUDIT_FAILURE_BURST failures (bad hellos, refused connections)
# from one address in each AUDIT_FAILURE_INTERVAL_S, then one line counting the rest.
AUDIT_FAILURE_BURST = 20
AUDIT_FAILURE_INTERVAL_S = 60.0
