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

# -- The node agent's state directory ---------------------------------------------------------
AGENT_LOCK_FILE = "agent.lock"  # one agent per directory
EXITS_DIR = "exits"  # unacknowledged job exits ...
EXIT_JOURNAL_FILE = "journal"  # ... appended here
JOBS_DIR = "jobs"  # <job id>.json records of running jobs, <job id>.status from the wrapper
SCRIPTS_DIR = "spool"  # job-<job id>.sh batch scripts
OUTPUT_DIR = "output"  # <job id>.<offset> segments of interactive jobs' output (replayed)
FAKE_GPU_FAULT_FILE = "fake-gpu-faults"  # faults injected into fake GPUs (tests, demos)
LEASE_FILE = "lease"  # until when the jobs may run without word from the master (the fence)
GUARD_PID_FILE = "guard.pid"  # the fence guard, which outlives the agent
GUARD_LOG_FILE = "guard.log"  # one line per thing the guard did

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
HEARTBEAT_INTERVAL_S = 5.0
MAX_CONNECTIONS = 4096  # open connections in total (nodes and clients) ...
MAX_CONNECTIONS_PER_ADDRESS = 512  # ... and from one address
