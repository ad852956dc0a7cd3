"""What a peer may send: the limits on message fields, and the validators for the kinds of
field that several records and messages share (ids, names, job references); and
:func:`shorten`, with which every sender fits text it did not write into a field.

Generous for real use, small enough that a hostile peer cannot make the master hold much more
than one frame's worth per message. The records (mgpu_core.models), the message tables
(mgpu_core.messages) and the handshake (mgpu_core.handshake) take their limits from here, so
that each is written once. Cheap to import: the TCP client's handshake loads it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mgpu_core.schema import AnyOf, Int, Str

MAX_NAME_LEN = 256
MAX_PATH_LEN = 4096
MAX_ARG_LEN = 128 * 1024
MAX_ARGS = 4096
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
MAX_ENV_CHARS = 1024 * 1024
MAX_ENV_ENTRIES = 8192
MAX_OUTPUT_CHUNK = 1024 * 1024
# One read of a job's output file (mgpu_client log): a client reads a large file in turns.
MAX_LOG_READ = 256 * 1024
MAX_GPUS_PER_NODE = 64
MAX_JOB_PORTS = 16  # --ports: TCP ports one job may be given
MAX_GPU_PROCESSES = 256  # the strangers' processes one GPU sample lists
MAX_IDS_PER_REQUEST = 10_000
MAX_CPUS = 65_536
MAX_BYTES = 2**60  # memory sizes
MAX_TIME_LIMIT_S = 10 * 365 * 86_400
MAX_NICE = 10_000  # nice is -MAX_NICE..MAX_NICE
MAX_REASON_LEN = 1024  # why a job ended, why it is killed, why a node is drained
MAX_MESSAGE_LEN = 4096  # an error's human message
MAX_JOB_REF_LEN = 32  # "ARRAYID_TASK"
MAX_DEPENDENCY_LEN = 64 * 1024  # --dependency, also after array ids are expanded to task ids

# The validators of the common fields (mgpu_core.schema), made when first imported (PEP 562):
# the numbers above are all a client command needs, and the schema module costs its start-up.
if TYPE_CHECKING:
    ID: Int  # a request id
    JOB_ID: Int
    NAME: Str
    GPU_INDEX: Int
    PID: Int
    # A job id, or "ARRAYID_TASK" for one task of a job array (a bare array id names all tasks).
    JOB_REF: AnyOf


_VALIDATORS = frozenset({"ID", "JOB_ID", "NAME", "GPU_INDEX", "PID", "JOB_REF"})


def __getattr__(name: str) -> object:
    if name not in _VALIDATORS:  # e.g. the import system's look for __path__
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from mgpu_core.schema import AnyOf, Int, Str

    job_id = Int(1, 2**53)
    validators = {
        "ID": Int(0, 2**53),
        "JOB_ID": job_id,
        "NAME": Str(MAX_NAME_LEN),
        "GPU_INDEX": Int(0, MAX_GPUS_PER_NODE - 1),
        "PID": Int(0, 2**32),
        "JOB_REF": AnyOf(job_id, Str(MAX_JOB_REF_LEN, min_len=3)),
    }
    globals().update(validators)  # made once: later imports find them as plain names
    return validators[name]


def shorten(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its beginning and a marker saying how
    much was cut (``…[truncated N chars]``), ``limit`` characters in all.

    The one way a sender fits text it did not write (a spawn error quoting a user's path, an
    NVML error, a process name) into a field's limit: a peer refuses a message with a field
    over the limit, and the message would be lost, or resent forever.
    """
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    while True:  # the marker's own length depends on the number in it: at most 3 rounds
        marker = f"…[truncated {cut} chars]"
        keep = limit - len(marker)
        if keep < 0:  # a limit shorter than the marker itself
            return text[:limit]
        if len(text) - keep == cut:
            return text[:keep] + marker
        cut = len(text) - keep
