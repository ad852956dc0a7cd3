"""The one definition of every job option of sbatch, srun and salloc (and their mgpu_* twins):
its spellings, whether it takes a value, what mgpu does with it and its help line. The fast
parser (:mod:`mgpu_client.cmdline`), the help text and the job builder
(:mod:`mgpu_client.jobspec`) are all made from this table, so an option is added here once.

What mgpu does with each option of Slurm's man pages (Slurm 23/24) is one of:

* ``USE``: honoured (the builder reads ``dest``);
* ``QUIET``: accepted, and its effect is what mgpu does anyway (``--unbuffered``: output is
  never buffered by mgpu; ``--get-user-env``: the job gets the submitter's environment);
* ``WARN``: accepted and ignored with one warning line, because ignoring it cannot change what
  the job computes (``--comment``, ``--wckey``);
* ``REFUSE``: refused with one line saying why, because ignoring it would (``--reservation``:
  there are none; ``--licenses``: not tracked).

Options a command does not know at all are refused as Slurm refuses them ("unrecognized option").
Only built-in types here: every job command imports this module at start-up.
"""

from __future__ import annotations

# The option record and its constants live in cmdline (which every command imports); this
# module is the job commands' table, which squeue or scancel need not build.
from mgpu_client.cmdline import (
    FLAG,
    OPTIONAL,
    QUIET,
    REFUSE,
    USE,
    VALUE,
    WARN,
    Opt,
)

__all__ = [  # the table, and its vocabulary re-exported from cmdline
    "BRA", "FLAG", "JOB_OPTIONS", "OPTIONAL", "QUIET", "REFUSE", "SRUN_WAIT", "USE", "VALUE",
    "WARN", "A", "B", "Opt", "R", "table_for",
]  # fmt: skip

# Which commands take an option: b = sbatch, r = srun, a = salloc.
B, R, A = "b", "r", "a"
BRA, BA, BR, RA = "bra", "ba", "br", "ra"

_NOT_TRACKED = "mgpu does not track it"
_CPU_LAYOUT = "mgpu places CPUs by count, not by socket or core layout"

# fmt: off
JOB_OPTIONS: tuple[Opt, ...] = (
    # What the job is and where its output goes.
    Opt("-J --job-name", "job_name", VALUE, BRA, USE, "Job name.", metavar="NAME"),
    Opt("-o --output", "output", VALUE, BR, USE,
        "stdout file (%j job id, %x name, %u user, %N node, %A/%a array, %t task, %% a %).",
        metavar="PATH"),
    Opt("-e --error", "error", VALUE, BR, USE, "stderr file [default: with stdout].",
        metavar="PATH"),
    Opt("-i --input", "input", VALUE, BR, REFUSE, "stdin file.",
        why="a job's stdin is not connected to a file yet"),
    Opt("--open-mode", "open_mode", VALUE, BR, USE,
        "append or truncate the output files [default: truncate; a requeued run appends].",
        metavar="append|truncate"),
    Opt("-D --chdir", "chdir", VALUE, BRA, USE, "Working directory [default: the current one].",
        metavar="DIR"),
    Opt("--wrap", "wrap", VALUE, B, USE, "Wrap this shell command line in a /bin/sh script.",
        metavar="CMD"),
    Opt("--export", "export", VALUE, BRA, USE,
        "Environment to pass: ALL (default), NONE, or a list VAR,VAR=value (with ALL,... to add).",
        metavar="ALL|NONE|VARS"),
    Opt("--export-file", "export_file", VALUE, BA, REFUSE, "Environment from a file.",
        why="not supported yet: use --export"),
    Opt("--get-user-env", "get_user_env", OPTIONAL, BA, QUIET,
        "Accepted: the job gets the submitter's environment."),
    Opt("--parsable", "parsable", FLAG, B, USE, "Print only the job id."),
    Opt("-a --array", "array", VALUE, B, USE,
        "A job array: 0-15, 1,3,5, 0-99:2, with %N to run at most N tasks at once.",
        metavar="SPEC"),
    # Resources.
    Opt("-N --nodes", "nodes", VALUE, BRA, USE, "Nodes: 1 (multi-node jobs are not supported).",
        metavar="N"),
    Opt("-n --ntasks", "ntasks", VALUE, BRA, USE, "Tasks (all on the job's node) [default: 1].",
        metavar="N"),
    Opt("--ntasks-per-node", "ntasks_per_node", VALUE, BRA, USE, "Tasks on the node.", metavar="N"),
    Opt("-c --cpus-per-task --cpus", "cpus_per_task", VALUE, BRA, USE, "CPUs per task [1].",
        metavar="N"),
    Opt("--mincpus", "mincpus", VALUE, BRA, USE, "At least this many CPUs.", metavar="N"),
    Opt("-G --gpus", "gpus", VALUE, BRA, USE, "GPUs for the job: N or TYPE:N [default: 0].",
        metavar="[TYPE:]N"),
    Opt("--gres", "gres", VALUE, BRA, USE, "Slurm's spelling of --gpus: gpu:N or gpu:TYPE:N.",
        metavar="gpu[:TYPE]:N"),
    Opt("--gpus-per-node", "gpus_per_node", VALUE, BRA, USE, "GPUs on the node: [TYPE:]N.",
        metavar="[TYPE:]N"),
    Opt("--gpus-per-task", "gpus_per_task", VALUE, BRA, USE, "GPUs per task: [TYPE:]N.",
        metavar="[TYPE:]N"),
    Opt("--cpus-per-gpu", "cpus_per_gpu", VALUE, BRA, USE, "CPUs per GPU.", metavar="N"),
    Opt("--mem", "mem", VALUE, BRA, USE, "Memory for the job, e.g. 16G (bare number: MB).",
        metavar="SIZE"),
    Opt("--mem-per-cpu", "mem_per_cpu", VALUE, BRA, USE, "Memory per CPU.", metavar="SIZE"),
    Opt("--mem-per-gpu", "mem_per_gpu", VALUE, BRA, USE, "Memory per GPU.", metavar="SIZE"),
    Opt("-t --time", "time", VALUE, BRA, USE,
        "Time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.", metavar="LIMIT"),
    Opt("--time-min", "time_min", VALUE, BRA, WARN, "Minimum time limit.",
        why="mgpu does not shrink time limits to fit a job in"),
    Opt("--exclusive", "exclusive", OPTIONAL, BRA, USE, "The whole node: no other job beside it."),
    Opt("--ports", "ports", VALUE, BRA, USE,
        "TCP ports for the job (Jupyter, TensorBoard) from its node's range: MGPU_PORTS.",
        metavar="N"),
    Opt("-s --oversubscribe", "oversubscribe", FLAG, BRA, WARN, "Share resources.",
        why="mgpu never gives a GPU to two jobs"),
    Opt("-C --constraint", "constraint", VALUE, BRA, REFUSE, "Node features.",
        why="nodes have no features; ask for a GPU type with --gpus TYPE:N"),
    Opt("--prefer", "prefer", VALUE, BRA, WARN, "Preferred node features.",
        why="nodes have no features"),
    Opt("-L --licenses", "licenses", VALUE, BRA, REFUSE, "Licenses.", why=_NOT_TRACKED),
    Opt("--tmp", "tmp", VALUE, BRA, WARN, "Temporary disk space.", why=_NOT_TRACKED),
    Opt("--tres-per-task", "tres_per_task", VALUE, BRA, REFUSE, "Trackable resources per task.",
        why="use --cpus-per-task and --gpus-per-task"),
    Opt("-B --extra-node-info", "extra_node_info", VALUE, BRA, WARN, "Sockets:cores:threads.",
        why=_CPU_LAYOUT),
    Opt("--sockets-per-node", "sockets_per_node", VALUE, BRA, WARN, "Sockets.", why=_CPU_LAYOUT),
    Opt("--cores-per-socket", "cores_per_socket", VALUE, BRA, WARN, "Cores.", why=_CPU_LAYOUT),
    Opt("--threads-per-core", "threads_per_core", VALUE, BRA, WARN, "Threads.", why=_CPU_LAYOUT),
    Opt("--ntasks-per-core", "ntasks_per_core", VALUE, BRA, WARN, "Per core.", why=_CPU_LAYOUT),
    Opt("--ntasks-per-socket", "ntasks_per_socket", VALUE, BRA, WARN, "Tasks per socket.",
        why=_CPU_LAYOUT),
    Opt("--ntasks-per-gpu", "ntasks_per_gpu", VALUE, BRA, REFUSE, "Tasks per GPU.",
        why="use --gpus-per-task"),
    Opt("--hint", "hint", VALUE, BRA, WARN, "Task binding hints.", why=_CPU_LAYOUT),
    Opt("-m --distribution", "distribution", VALUE, BRA, WARN, "Task distribution.",
        why="every task of a job is on its one node"),
    Opt("--cpu-bind", "cpu_bind", VALUE, RA, WARN, "CPU binding.", why=_CPU_LAYOUT),
    Opt("--mem-bind", "mem_bind", VALUE, BRA, WARN, "Memory binding.", why=_CPU_LAYOUT),
    Opt("--gpu-bind", "gpu_bind", VALUE, BRA, WARN, "GPU binding.",
        why="each task sees all the job's GPUs unless --gpus-per-task is given"),
    Opt("--gpu-freq", "gpu_freq", VALUE, BRA, WARN, "GPU frequency.", why="GPU clocks are not set"),
    Opt("--cpu-freq", "cpu_freq", VALUE, BRA, WARN, "CPU frequency.", why="CPU clocks are not set"),
    Opt("--gres-flags", "gres_flags", VALUE, BRA, WARN, "GRES flags.", why=_CPU_LAYOUT),
    Opt("-S --core-spec", "core_spec", VALUE, BRA, WARN, "Specialised cores.", why=_CPU_LAYOUT),
    Opt("--thread-spec", "thread_spec", VALUE, BRA, WARN, "Specialised threads.", why=_CPU_LAYOUT),
    Opt("-O --overcommit", "overcommit", FLAG, BRA, WARN, "Overcommit CPUs.",
        why="mgpu gives each job the CPUs it asks for"),
    Opt("--contiguous", "contiguous", FLAG, BRA, QUIET, "Contiguous nodes (one node always is)."),
    Opt("--switches", "switches", VALUE, BRA, QUIET, "Leaf switches (one node needs one)."),
    Opt("--spread-job", "spread_job", FLAG, BRA, QUIET, "Spread over nodes (one node)."),
    Opt("--use-min-nodes", "use_min_nodes", FLAG, BRA, QUIET, "Fewest nodes (one)."),
    # Where and when.
    Opt("-p --partition", "partition", VALUE, BRA, USE,
        "Partitions, in order of preference: the job runs in the first that can start it soonest.",
        metavar="NAMES"),
    Opt("-w --nodelist", "nodelist", VALUE, BRA, USE, "Run on one of these nodes, e.g. gpu[01-04].",
        metavar="NODES"),
    Opt("-x --exclude", "exclude", VALUE, BRA, USE, "Never on these nodes.", metavar="NODES"),
    Opt("-F --nodefile", "nodefile", VALUE, BRA, REFUSE, "Nodes from a file.",
        why="not supported: use -w"),
    Opt("-q --qos", "qos", VALUE, BRA, USE, "Quality of service [default: the master's].",
        metavar="QOS"),
    Opt("-A --account", "account", VALUE, BRA, USE, "Account to charge (shown in sacct).",
        metavar="NAME"),
    Opt("--reservation", "reservation", VALUE, BRA, REFUSE, "Reservation.",
        why="mgpu has no reservations"),
    Opt("-b --begin", "begin", VALUE, BRA, USE, "Not before TIME: now+60, now+2hours, 16:00, "
        "2026-12-24T18:30.", metavar="TIME"),
    Opt("--deadline", "deadline", VALUE, BRA, REFUSE, "Deadline.", why="not enforced"),
    Opt("-d --dependency", "dependency", VALUE, BRA, USE,
        "e.g. afterok:12:13, afterany:14?afternotok:15, singleton.", metavar="SPEC"),
    Opt("--kill-on-invalid-dep", "kill_on_invalid_dep", VALUE, BRA, USE,
        "Cancel the job if its dependency can never be met [default: no].", metavar="yes|no"),
    Opt("-H --hold", "hold", FLAG, BRA, USE, "Submit held (pending until released)."),
    Opt("--nice", "nice", OPTIONAL, BRA, USE,
        "Lower the job's priority by this much (negative: admins only) [no value: 100]."),
    Opt("--priority", "priority", VALUE, BRA, REFUSE, "Set the priority.",
        why="only an admin sets a priority: mgpu_client update JOB priority=N"),
    Opt("--requeue", "requeue", FLAG, B, USE, "Requeue the job if its node fails [default]."),
    Opt("--no-requeue", "no_requeue", FLAG, B, USE, "Never requeue the job."),
    Opt("--signal", "signal", VALUE, BRA, USE,
        "Send SIG this long (default 60 s) before the time limit.", metavar="[B:]SIG[@SECONDS]"),
    Opt("-k --no-kill", "no_kill", OPTIONAL, BRA, QUIET,
        "Accepted: a one-node job ends with its node anyway."),
    Opt("-W --wait", "wait", FLAG, B, USE, "Wait for the job to end; exit with its exit code."),
    Opt("--test-only", "test_only", FLAG, BR, USE,
        "Say when and where the job would start; submit nothing."),
    Opt("-I --immediate", "immediate", OPTIONAL, RA, REFUSE, "Give up unless resources are free.",
        why="not supported yet"),
    # Accounting, notices and other clusters' features.
    Opt("--comment", "comment", VALUE, BRA, WARN, "A comment.", why="comments are not stored yet"),
    Opt("--wckey", "wckey", VALUE, BRA, WARN, "Workload characterisation key.", why=_NOT_TRACKED),
    Opt("--mail-type", "mail_type", VALUE, BRA, USE,
        "Tell of these events by mail and --notify (BEGIN, END, FAIL, REQUEUE, "
        "INVALID_DEPEND, TIME_LIMIT[_90|_80|_50], ALL, NONE).", metavar="TYPE[,TYPE...]"),
    Opt("--mail-user", "mail_user", VALUE, BRA, USE,
        "Mail the events to this address [default: you, at the cluster's mail domain]."),
    Opt("--notify", "notify", VALUE, BRA, USE,
        "Also POST the events (JSON, HMAC-signed) to this URL, if the cluster allows it.",
        metavar="URL"),
    Opt("-M --clusters", "clusters", VALUE, BRA, WARN, "Clusters.",
        why="mgpu is one cluster: the job goes to this master"),
    Opt("--cluster-constraint", "cluster_constraint", VALUE, BRA, WARN, "Cluster features.",
        why="mgpu is one cluster"),
    Opt("--acctg-freq", "acctg_freq", VALUE, BRA, QUIET, "Accounting sampling interval."),
    Opt("--profile", "profile", VALUE, BRA, WARN, "Profiling.", why=_NOT_TRACKED),
    Opt("--propagate", "propagate", OPTIONAL, BRA, QUIET,
        "Resource limits: the job inherits the submitter's, as it does in mgpu."),
    Opt("--mcs-label", "mcs_label", VALUE, BRA, WARN, "MCS label.", why=_NOT_TRACKED),
    Opt("--network", "network", VALUE, BRA, WARN, "Network.", why=_NOT_TRACKED),
    Opt("--power", "power", VALUE, BRA, WARN, "Power.", why=_NOT_TRACKED),
    Opt("--extra", "extra", VALUE, BRA, WARN, "Extra.", why=_NOT_TRACKED),
    Opt("--delay-boot", "delay_boot", VALUE, BRA, QUIET, "Node reboot delay (never rebooted)."),
    Opt("--reboot", "reboot", FLAG, BRA, REFUSE, "Reboot nodes.", why="mgpu never reboots a node"),
    Opt("--bb", "bb", VALUE, BRA, REFUSE, "Burst buffer.", why="mgpu has no burst buffers"),
    Opt("--bbf", "bbf", VALUE, BA, REFUSE, "Burst buffer file.", why="mgpu has no burst buffers"),
    Opt("--container", "container", VALUE, BRA, REFUSE, "OCI container.",
        why="Slurm's OCI bundles are not supported: use --container-image"),
    Opt("--container-id", "container_id", VALUE, BRA, REFUSE, "OCI container id.",
        why="Slurm's OCI bundles are not supported: use --container-image"),
    # pyxis's spellings (docs/sessions.md, "Containers").
    Opt("--container-image", "container_image", VALUE, BR, USE,
        "Run the job in this image, with only its GPUs (a node with a container runtime).",
        metavar="IMAGE"),
    Opt("--container-mounts", "container_mounts", VALUE, BR, USE,
        "Bind these into the container: SRC:DST[:ro|rw],... (absolute paths).",
        metavar="MOUNTS"),
    Opt("--container-workdir", "container_workdir", VALUE, BR, USE,
        "Working directory inside the container.", metavar="DIR"),
    Opt("--uid", "uid", VALUE, BRA, REFUSE, "Submit as another user.",
        why="a job runs as the user who submits it"),
    Opt("--gid", "gid", VALUE, BRA, REFUSE, "Submit as another group.",
        why="a job runs as the user who submits it"),
    Opt("--wait-all-nodes", "wait_all_nodes", VALUE, BA, QUIET, "Wait for nodes (one node)."),
    Opt("--ignore-pbs", "ignore_pbs", FLAG, B, QUIET, "PBS directives are never read."),
    Opt("--batch", "batch_features", VALUE, B, WARN, "Batch host features.",
        why="nodes have no features"),
    Opt("--het-group", "het_group", VALUE, R, REFUSE, "Heterogeneous job component.",
        why="heterogeneous jobs are not supported"),
    # srun's own.
    Opt("-l --label", "label", FLAG, R, USE, "Prefix each output line with its task number."),
    Opt("-u --unbuffered", "unbuffered", FLAG, R, QUIET, "Accepted: output is never buffered."),
    Opt("--pty", "pty", OPTIONAL, R, USE, "Run task 0 in a pseudo-terminal."),
    Opt("--jobid", "jobid", VALUE, R, USE, "Run as a step of this running job.", metavar="JOB"),
    Opt("--overlap", "overlap", FLAG, R, QUIET, "Steps may share the job's resources (they do)."),
    Opt("--exact", "exact", FLAG, R, QUIET, "Accepted: a step gets the resources it asks for."),
    Opt("-X --disable-status", "disable_status", FLAG, R, QUIET, "Accepted."),
    Opt("-K --kill-on-bad-exit", "kill_on_bad_exit", OPTIONAL, R, USE,
        "End the step when a task exits non-zero."),
    Opt("--mpi", "mpi", VALUE, R, USE, "MPI plugin: only none.", metavar="TYPE"),
    Opt("--multi-prog", "multi_prog", FLAG, R, REFUSE, "Different programs per task.",
        why="not supported yet"),
    Opt("-Z --no-allocate", "no_allocate", FLAG, R, REFUSE, "Run without an allocation.",
        why="only an admin may, and mgpu does not support it"),
    Opt("-E --preserve-env", "preserve_env", FLAG, R, QUIET, "Accepted: the environment is kept."),
    Opt("--quit-on-interrupt", "quit_on_interrupt", FLAG, R, QUIET,
        "Accepted: one Ctrl-C cancels the job."),
    Opt("-r --relative", "relative", VALUE, R, QUIET, "Node offset (one node: 0)."),
    Opt("-T --threads", "threads", VALUE, R, QUIET, "Launch threads."),
    Opt("--compress", "compress", OPTIONAL, R, QUIET, "Accepted (no broadcast)."),
    Opt("--bcast", "bcast", OPTIONAL, R, REFUSE, "Copy the program to the node.",
        why="not supported: the program must be on the node"),
    Opt("--prolog", "prolog", VALUE, R, REFUSE, "Run before the step.", why="not supported yet"),
    Opt("--epilog", "epilog", VALUE, R, REFUSE, "Run after the step.", why="not supported yet"),
    Opt("--task-prolog", "task_prolog", VALUE, R, REFUSE, "Run before each task.",
        why="not supported yet"),
    Opt("--task-epilog", "task_epilog", VALUE, R, REFUSE, "Run after each task.",
        why="not supported yet"),
    Opt("--accel-bind", "accel_bind", VALUE, R, WARN, "Accelerator binding.", why=_CPU_LAYOUT),
    Opt("--resv-ports", "resv_ports", OPTIONAL, R, REFUSE, "Reserved ports.",
        why="not supported yet"),
    Opt("--send-libs", "send_libs", OPTIONAL, R, QUIET, "Accepted (no broadcast)."),
    Opt("--slurmd-debug", "slurmd_debug", VALUE, R, QUIET, "Accepted (no slurmd)."),
    # salloc's own.
    Opt("--no-shell", "no_shell", FLAG, A, USE, "Allocate, print the job id and exit."),
    Opt("--bell", "bell", FLAG, A, QUIET, "Ring when allocated (accepted)."),
    Opt("--no-bell", "no_bell", FLAG, A, QUIET, "Do not ring (accepted)."),
    # Every command's.
    Opt("-Q --quiet", "quiet", FLAG, BRA, USE, "Print nothing but errors."),
    Opt("-v --verbose", "verbose", FLAG, BRA, QUIET, "Accepted: there is nothing more to say."),
    Opt("--master", "master", VALUE, BRA, USE,
        "The master: HOST:PORT or unix:PATH [default: MGPU_MASTER, the config, the local socket].",
        metavar="ADDR"),
)
# fmt: on

# srun's -W/--wait is a number of seconds (how long to wait for other tasks once one ended);
# sbatch's is a flag. srun's is accepted and ignored (its tasks end together).
SRUN_WAIT = Opt("-W --wait", "task_wait", VALUE, R, QUIET, "Seconds to wait for other tasks.")


def table_for(command: str) -> dict[str, Opt]:
    """Every spelling of the options ``command`` (B, R or A) knows -> its option."""
    names: dict[str, Opt] = {}
    options = (*JOB_OPTIONS, SRUN_WAIT) if command == R else JOB_OPTIONS
    for opt in options:
        if command in opt.commands and not (command == R and opt.dest == "wait"):
            for name in opt.names:
                names[name] = opt
    return names
