#!/usr/bin/env bash
# Build the mgpu tools into ONE PyInstaller one-folder bundle, dist/mgpu/ (the executable
# dist/mgpu/mgpu and its _internal/), with one symlink per tool. The bundle's entry script,
# packaging/launcher.py, runs the tool named by argv[0] (busybox-style):
#
#   dist/mgpu/mgpu_srun -> mgpu         inside the bundle: what `mgpu_client local start` runs
#                                       (it starts sys.executable's siblings mgpu_master/mgpu_node)
#   dist/mgpu_srun      -> mgpu/mgpu_srun   convenience links at the top of dist/
#
# PyInstaller's bootloader keeps argv[0] as the link's name, resolves the link to find
# _internal/, and sets sys.executable to the real dist/mgpu/mgpu (checked by
# tests/integration/test_build.py). Slurm's names (sbatch, squeue, ...) are tools of the bundle
# too, but get no link here: `dist/mgpu/mgpu_client slurm-commands DIR` links them into DIR,
# opt-in, so that no real Slurm is shadowed.
#
# The bundle must stay small (<= 40 MB, checked by the test) and start fast (within 1.3x of the
# venv's commands: `python -m bench --only startup --bundle dist/mgpu`, docs/performance.md).
#
# Usage: ./build.sh   (from any directory; PYTHON=/path/to/python to use another interpreter,
# which needs mgpu's dependencies and pyinstaller: pip install -e '.[build]')
set -euo pipefail

# A relative $PYTHON path is relative to the caller's directory; the default, to this one.
if [[ "${PYTHON:-}" == */* && "$PYTHON" != /* ]]; then
    PYTHON="$PWD/$PYTHON"
fi
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
PYTHON="${PYTHON:-.venv/bin/python}"
TOOLS=(mgpu_master mgpu_node mgpu_client mgpu_srun mgpu_sbatch mgpu_queue mgpu_cancel)
SLURM_TOOLS=(sbatch srun salloc squeue scancel sacct sinfo scontrol)

if ! "$PYTHON" -c 'import PyInstaller' 2>/dev/null; then
    echo "build.sh: PyInstaller is not importable by $PYTHON; install it: pip install -e '.[build]'" >&2
    exit 1
fi

pyinstaller_args=(
    --noconfirm --clean --log-level WARN
    --onedir --console --name mgpu
    --distpath dist --workpath build/pyinstaller --specpath build
    --paths "$PWD/src"
    # packaging/hooks/rthooks.dat replaces PyInstaller's run-time hook for inspect, which
    # imported inspect and zipfile at every start (~15 ms of each command; see the hook).
    --additional-hooks-dir "$PWD/packaging/hooks"
    # The dashboard's files, read from the package at run time.
    --add-data "$PWD/src/mgpu_server/dashboard/static:mgpu_server/dashboard/static"
    # Imported lazily inside mgpu_node/nvml.py (NvmlBackend); listed so NVML always works.
    --hidden-import pynvml
    # Never used by mgpu. multiprocessing is only reachable through
    # concurrent.futures.ProcessPoolExecutor (asyncio's executor is a thread pool); excluding
    # it also drops the xmlrpc, http, xml and pyexpat modules it drags in.
    --exclude-module multiprocessing
    # ctypes is kept outside the import path (mgpu_lazy/, added below): PyInstaller's bootstrap
    # imports it at every start if it can (~1.5 ms of each command); only NVML needs it, and
    # packaging/launcher.py puts mgpu_lazy/ on sys.path for the node agent.
    --exclude-module ctypes
    --exclude-module tkinter
    --exclude-module unittest
    --exclude-module pydoc
    --exclude-module doctest
    # Reached only through optional imports, never by mgpu (build/pyinstaller/mgpu/
    # xref-mgpu.html shows each chain): rich (used only by `mgpu_client gpu monitor`: Console,
    # Live, Text) -> rich.syntax/rich.traceback -> pygments -> pygments.formatters.img -> PIL
    # -> PIL._typing -> numpy (with numpy.libs and pillow.libs, 55 of the bundle's 93 MB);
    # rich.markdown -> markdown_it; rich.jupyter -> IPython. matplotlib is a test dependency
    # in the same venv.
    --exclude-module numpy
    --exclude-module PIL
    --exclude-module matplotlib
    --exclude-module pygments
    --exclude-module markdown_it
    --exclude-module mdurl
    --exclude-module IPython
    --exclude-module rich.syntax
    --exclude-module rich.traceback
    --exclude-module rich.markdown
    # Never imported at run time here, and making room for --debug noarchive below: the pure
    # Python fallbacks of what the C modules provide (_pydecimal), archive formats only
    # reached through shutil's and zipfile's optional imports (bz2, lzma, tarfile),
    # importlib.metadata with the email parser and csv it brings (click asks it for a version
    # only when version_option has none; ours all pass __version__; cryptography.x509 needs
    # only email.utils, which stays), and typing_extensions (imported by click and rich only
    # under TYPE_CHECKING or before Python 3.11).
    --exclude-module _pydecimal
    # The HTTP API's fast JSON encoder (net/httpapi.py falls back to json without it): its
    # module and licences would take the bundle over its 40 MiB bar.
    --exclude-module orjson
    --exclude-module bz2
    --exclude-module _bz2
    --exclude-module lzma
    --exclude-module _lzma
    --exclude-module tarfile
    --exclude-module importlib.metadata
    --exclude-module csv
    --exclude-module typing_extensions
    # rich's Windows-only consoles (imported only where WINDOWS is true), and zipfile (only
    # shutil's archive helpers and importlib's zip readers reach it; the bundle has no zips).
    --exclude-module rich._win32_console
    --exclude-module rich._windows
    --exclude-module rich._windows_renderer
    --exclude-module zipfile
    # attrs: only rich.pretty's optional import reaches it (the venv has it for test tools).
    --exclude-module attr
    --exclude-module attrs
    # The modules as loose .pyc files in _internal/ instead of a compressed archive inside the
    # executable (and base_library.zip): each command's start is ~3 ms shorter (measured,
    # docs/performance.md "Command start-up"), for ~5 MB more on disk.
    --debug noarchive
)
read -r ctypes_dir ctypes_ext < <("$PYTHON" -c \
    'import ctypes, _ctypes, os; print(os.path.dirname(ctypes.__file__), _ctypes.__file__)')
pyinstaller_args+=(--add-binary "$ctypes_ext:mgpu_lazy")
for module in __init__ _endian util; do  # what pynvml imports (not its tests or macholib)
    pyinstaller_args+=(--add-data "$ctypes_dir/$module.py:mgpu_lazy/ctypes")
done
# Debug symbols are most of libpython's size; strip them when a strip tool exists.
if command -v strip >/dev/null; then
    pyinstaller_args+=(--strip)
fi

# PyInstaller prints a few INFO lines even at WARN: keep its output in a log, show it on
# failure, and pass on only its warnings and errors otherwise.
mkdir -p build
log=build/pyinstaller.log
if ! "$PYTHON" -m PyInstaller "${pyinstaller_args[@]}" "$PWD/packaging/launcher.py" >"$log" 2>&1; then
    cat "$log" >&2
    echo "build.sh: PyInstaller failed (log: $PWD/$log)" >&2
    exit 1
fi
# (Our replacement of the inspect run-time hook is announced as a warning: expected.)
grep -v -E '^[0-9]+ INFO: |^[0-9]+ WARNING: Runtime hooks for inspect have already been defined' \
    "$log" >&2 || true

for tool in "${TOOLS[@]}"; do
    ln -sfn mgpu "dist/mgpu/$tool"
    ln -sfn "mgpu/$tool" "dist/$tool"
done

# Smoke check: every link starts the right tool, and the bundle knows Slurm's names.
for tool in "${TOOLS[@]}"; do
    if ! usage="$("dist/$tool" --help 2>&1)" || [[ "$usage" != *"Usage: $tool "* ]]; then
        echo "build.sh: dist/$tool --help failed:" >&2
        echo "$usage" >&2
        exit 1
    fi
done
for tool in "${SLURM_TOOLS[@]}"; do
    if ! usage="$(dist/mgpu/mgpu "$tool" --help 2>&1)" || [[ "${usage,,}" != *"usage: $tool "* ]]; then
        echo "build.sh: dist/mgpu/mgpu $tool --help failed:" >&2
        echo "$usage" >&2
        exit 1
    fi
done

echo "build.sh: built dist/mgpu/ ($(du -sh dist/mgpu | cut -f1)) and ${TOOLS[*]/#/dist/}"
