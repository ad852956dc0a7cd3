"""``mgpu_client slurm-commands DIR``: Slurm's command names for mgpu, opt-in. Each is a tiny
script (or, in the PyInstaller bundle, a link to it) that runs the mgpu command with Slurm's
name and Slurm's exit codes; a user puts DIR first on PATH. Nothing is written anywhere else,
so no real Slurm is shadowed unless the user asks for it.

The scripts start Python with ``-I -S`` and put mgpu's and its libraries' directories on
``sys.path`` themselves: without ``site`` (and the .pth files of a virtualenv), Python starts
in ~8 ms instead of ~11, which is most of what ``squeue`` in a loop costs.
"""

from __future__ import annotations

import os
import sys

from mgpu_core.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

# Slurm's name -> (module, function).
COMMANDS = {
    "sbatch": ("mgpu_client.sbatch", "slurm_main"),
    "srun": ("mgpu_client.srun", "slurm_main"),
    "salloc": ("mgpu_client.salloc", "slurm_main"),
    "squeue": ("mgpu_client.squeue", "slurm_main"),
    "scancel": ("mgpu_client.scancel", "slurm_main"),
    "sacct": ("mgpu_client.sacct", "slurm_main"),
    "sinfo": ("mgpu_client.sinfo", "slurm_main"),
    "scontrol": ("mgpu_client.scontrol", "slurm_main"),
}
# mgpu's own hot commands, as scripts/setup.sh rewrites them in the venv: pip's console
# scripts start Python with site (~3 ms more); these start it as the Slurm names do.
MGPU_COMMANDS = {
    "mgpu_srun": ("mgpu_client.srun", "main"),
    "mgpu_sbatch": ("mgpu_client.sbatch", "main"),
    "mgpu_queue": ("mgpu_client.queue", "main"),
    "mgpu_cancel": ("mgpu_client.scancel", "main"),
}
MARK = "# written by mgpu_client slurm-commands"


def _import_dirs() -> list[str]:
    """The directories holding mgpu's packages and the libraries the commands import."""
    import msgpack

    import mgpu_client

    dirs = []
    for module in (mgpu_client, msgpack):
        package_dir = os.path.dirname(os.path.abspath(module.__file__ or ""))
        parent = os.path.dirname(package_dir)
        if parent not in dirs:
            dirs.append(parent)
    return dirs


def script_text(name: str) -> str:
    module, function = COMMANDS.get(name) or MGPU_COMMANDS[name]
    return (
        f"#!{sys.executable} -IS\n"
        f"{MARK} ({name}: Python without site, which costs ~3 ms of start-up)\n"
        "import sys\n"
        f"sys.path[:0] = {_import_dirs()!r}\n"
        f"from {module} import {function}\n"
        f"{function}()\n"
    )


def _ours(path: Path) -> bool:
    if path.is_symlink():
        return os.path.basename(os.readlink(path)) in ("mgpu", "mgpu_client")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARK in f.read(4096)
    except OSError:
        return False


def write_commands(
    directory: Path, *, force: bool = False, names: dict[str, tuple[str, str]] = COMMANDS
) -> list[str]:
    """Write (or refresh) every command into ``directory``; lines saying what was done."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {directory}: {exc.strerror}") from None
    frozen = getattr(sys, "frozen", False)
    done = []
    for name in names:
        path = directory / name
        if (path.exists() or path.is_symlink()) and not force and not _ours(path):
            raise UsageError(f"{path} exists and is not mgpu's: not replaced (--force replaces it)")
        tmp = directory / f".{name}.mgpu-tmp"
        try:
            if tmp.exists() or tmp.is_symlink():
                tmp.unlink()
            if frozen:
                tmp.symlink_to(sys.executable)  # the bundle runs the tool named by argv[0]
            else:
                tmp.write_text(script_text(name), encoding="utf-8")
                tmp.chmod(0o755)
            os.replace(tmp, path)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
        done.append(f"wrote {path}")
    done.append(f'use them with: export PATH="{directory.absolute()}:$PATH"')
    return done


def main() -> None:
    """``python -m mgpu_client.slurmcmds --mgpu-commands BIN``: scripts/setup.sh's step that
    replaces pip's console scripts of mgpu_srun, mgpu_sbatch, mgpu_queue and mgpu_cancel in
    the venv's BIN with scripts that start Python without site."""
    from pathlib import Path

    if len(sys.argv) != 3 or sys.argv[1] != "--mgpu-commands":
        sys.exit("usage: python -m mgpu_client.slurmcmds --mgpu-commands BIN_DIR")
    for line in write_commands(Path(sys.argv[2]), force=True, names=MGPU_COMMANDS)[:-1]:
        print(line)


if __name__ == "__main__":
    main()
