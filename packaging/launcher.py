"""The one entry script of the PyInstaller bundle: every mgpu tool in one executable.

The bundle is ``dist/mgpu/mgpu``; each tool is a symlink to it (``dist/mgpu/mgpu_srun -> mgpu``)
and the tool to run is the basename of ``sys.argv[0]``, busybox-style. Started as ``mgpu`` itself,
the tool name is the first argument instead: ``mgpu mgpu_queue -t all``. Slurm's names
(``sbatch``, ``squeue``, ...) are tools too: ``mgpu_client slurm-commands DIR`` run from the
bundle links them to it.

Each tool's module is imported inside its own small function, so that only the chosen tool's
code is loaded at start (``mgpu_queue`` never imports the server or asyncio), while PyInstaller's
bytecode analysis still sees every import and bundles all of them.
"""

from __future__ import annotations

import os
import sys

from mgpu_core.exitcodes import EXIT_USAGE

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc would cost every start its import (~1 ms)
    from collections.abc import Callable

BUNDLE_NAME = "mgpu"


def _master() -> None:
    from mgpu_server.cli import main

    main()


def _lazy_stdlib() -> None:
    """Put ctypes within reach. The bundle keeps it outside the import path
    (``_internal/mgpu_lazy/``, build.sh): PyInstaller's bootstrap imports ctypes at every
    start when it can (~1.5 ms of each command), and only NVML (pynvml, in the node agent)
    needs it."""
    lazy = os.path.join(getattr(sys, "_MEIPASS", ""), "mgpu_lazy")
    if os.path.isdir(lazy) and lazy not in sys.path:
        sys.path.append(lazy)


def _node() -> None:
    _lazy_stdlib()
    from mgpu_node.cli import main

    main()


def _node_guard() -> None:
    from mgpu_node.guard import main

    main()


def _client() -> None:
    from mgpu_client.main import main

    main()


def _srun() -> None:
    from mgpu_client.srun import main

    main()


def _sbatch() -> None:
    from mgpu_client.sbatch import main

    main()


def _queue() -> None:
    from mgpu_client.queue import main

    main()


def _cancel() -> None:
    from mgpu_client.scancel import main

    main()


# Slurm's names, as `mgpu_client slurm-commands DIR` links them in the bundle (the same
# functions as the scripts it writes outside one: mgpu_client.slurmcmds.COMMANDS).


def _slurm_sbatch() -> None:
    from mgpu_client.sbatch import slurm_main

    slurm_main()


def _slurm_srun() -> None:
    from mgpu_client.srun import slurm_main

    slurm_main()


def _slurm_salloc() -> None:
    from mgpu_client.salloc import slurm_main

    slurm_main()


def _slurm_squeue() -> None:
    from mgpu_client.squeue import slurm_main

    slurm_main()


def _slurm_scancel() -> None:
    from mgpu_client.scancel import slurm_main

    slurm_main()


def _slurm_sacct() -> None:
    from mgpu_client.sacct import slurm_main

    slurm_main()


def _slurm_sinfo() -> None:
    from mgpu_client.sinfo import slurm_main

    slurm_main()


def _slurm_scontrol() -> None:
    from mgpu_client.scontrol import slurm_main

    slurm_main()


TOOLS: dict[str, Callable[[], None]] = {
    "mgpu_master": _master,
    "mgpu_node": _node,
    "mgpu_node_guard": _node_guard,  # started by mgpu_node (mgpu_node.guard.command)
    "mgpu_client": _client,
    "mgpu_srun": _srun,
    "mgpu_sbatch": _sbatch,
    "mgpu_queue": _queue,
    "mgpu_cancel": _cancel,
}
SLURM_TOOLS: dict[str, Callable[[], None]] = {
    "sbatch": _slurm_sbatch,
    "srun": _slurm_srun,
    "salloc": _slurm_salloc,
    "squeue": _slurm_squeue,
    "scancel": _slurm_scancel,
    "sacct": _slurm_sacct,
    "sinfo": _slurm_sinfo,
    "scontrol": _slurm_scontrol,
}


def _clean_environment() -> None:
    """Undo the bootloader's environment changes for everything this process starts.

    PyInstaller prepends the bundle's ``_internal`` to ``LD_LIBRARY_PATH`` (keeping any
    original value in ``LD_LIBRARY_PATH_ORIG``) and sets ``_PYI_*`` variables. Left in place,
    they would reach every job (``mgpu_srun``/``mgpu_sbatch`` send the submitter's environment),
    which would then load the bundle's libssl, libpython, ... instead of the system's, and a
    sibling started from here would take itself for part of this process's start-up. This
    process is not affected: the dynamic loader read ``LD_LIBRARY_PATH`` when it started.
    """
    if not getattr(sys, "frozen", False):
        return
    env = os.environ
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        env["LD_LIBRARY_PATH"] = original
    else:
        bundle = getattr(sys, "_MEIPASS", None)
        kept = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != bundle]
        if kept:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(kept)
        else:
            env.pop("LD_LIBRARY_PATH", None)
    for key in [k for k in env if k.startswith("_PYI_")]:
        del env[key]


def _usage() -> str:
    return (
        f"usage: {BUNDLE_NAME} TOOL [ARGS...] where TOOL is one of: {', '.join(TOOLS)}, "
        f"or Slurm's {', '.join(SLURM_TOOLS)}"
    )


def main() -> None:
    name = os.path.basename(sys.argv[0])
    if name == BUNDLE_NAME:
        if len(sys.argv) < 2:
            print(_usage(), file=sys.stderr)
            sys.exit(EXIT_USAGE)
        if sys.argv[1] in ("-h", "--help"):
            print(_usage())
            sys.exit(0)
        # The tool sees itself as argv[0], as if started through its own link.
        name = os.path.basename(sys.argv[1])
        sys.argv = [sys.argv[1], *sys.argv[2:]]
    tool = TOOLS.get(name) or SLURM_TOOLS.get(name)
    if tool is None:
        print(f"{BUNDLE_NAME}: error: unknown tool '{name}'; {_usage()}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    _clean_environment()
    tool()


if __name__ == "__main__":
    main()
