"""``python -m bench``: run the benchmark suite on a local cluster it starts itself, print each
figure beside its target, write results.json and the plots (see docs/performance.md).

Benchmarks never fail the test suite; ``--quick`` (tiny sizes) is what the smoke test runs so
the suite cannot rot. Exit status 0 whether or not targets are met: they are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from bench import cluster_scale, commands, dashboard, deps, http, idle, latency, report, startup

_N = TypeVar("_N", int, float)

SIZES_FULL = [(10, 1_000), (100, 10_000), (1_000, 100_000)]
SIZES_QUICK = [(4, 50), (8, 200)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output dir")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--idle-seconds", type=float, default=None)
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="a built PyInstaller bundle (dist/mgpu) whose commands `startup` also times",
    )
    args = parser.parse_args(argv)
    quick = args.quick

    def n(full: _N, small: _N) -> _N:
        return small if quick else full

    sizes = SIZES_QUICK if quick else SIZES_FULL
    benches: dict[str, Callable[[Path], Any]] = {
        "submit": lambda d: latency.submit_throughput(d, jobs=n(20_000, 200), repeats=n(5, 2)),
        "sbatch_loop": lambda d: latency.sbatch_loop(d, jobs=n(50, 3)),
        "dispatch": lambda d: latency.dispatch_latency(d, samples=n(300, 5)),
        "end_to_end": lambda d: latency.end_to_end(d, jobs=n(4_000, 40)),
        "commands": lambda d: commands.command_times(d, runs=n(20, 2), queue_jobs=n(10_000, 100)),
        "startup": lambda d: startup.startup_times(
            d,
            runs=n(30, 3),
            pending_jobs=n(500, 50),
            loop_jobs=n(200, 10),
            bundle=args.bundle.resolve() if args.bundle else None,
        ),
        "turn_switch": lambda d: latency.turn_switch(d, samples=n(40, 2)),
        "dashboard": lambda d: dashboard.first_paint(d, gpus=n(1_000, 16), runs=n(10, 2)),
        "http": lambda d: http.http_api(
            d, nodes=n(1_000, 10), gpus=8, jobs=n(10_000, 200), runs=n(20, 3), idle_s=n(30.0, 1.0)
        ),
        "idle": lambda d: idle.idle_cost(d, seconds=args.idle_seconds or n(60.0, 1.0)),
        "deps": lambda d: deps.dependency_passes(quick=quick),
        "scale": lambda d: [
            cluster_scale.master_at_scale(d / f"{nodes}", nodes=nodes, gpus=8, pending=pending)
            for nodes, pending in sizes
        ],
    }
    chosen = [b for b in args.only.split(",") if b] or list(benches)
    unknown = set(chosen) - set(benches)
    if unknown:
        parser.error(f"unknown benchmark {sorted(unknown)[0]!r}; choose from {', '.join(benches)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": _machine(), "quick": quick, "started": time.time()}
    scratch = Path(tempfile.mkdtemp(prefix="mgpu-bench-"))
    try:
        for name in chosen:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            results[name] = benches[name](scratch / name)
            print(f"bench: {name} took {time.monotonic() - started:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    rows = report.rows(results)
    print(report.table(rows))
    if "startup" in results:
        print(startup.table(results["startup"]))
    for path in report.plots(results, args.out):
        print(f"plot: {path}")
    print(f"results: {args.out / 'results.json'}")
    return 0


def _machine() -> dict[str, Any]:
    return {
        "cpus": psutil.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


if __name__ == "__main__":
    sys.exit(main())
