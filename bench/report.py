"""The results table (each figure beside its target, pass/fail) and the plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import dashboard, http, startup


@dataclass(frozen=True)
class Row:
    name: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = False
    detail: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        ok = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "PASS" if ok else "FAIL"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g} {self.unit}"


def _ms(d: dict[str, Any]) -> str:
    return (
        f"min {d['min']:.2f} / med {d['median']:.2f} / p99 {d['p99']:.2f} / "
        f"max {d['max']:.2f} ms (n={d['n']})"
    )


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    if "submit" in results:
        r = results["submit"]
        out.append(
            Row(
                "submit, one connection (durable)",
                r["jobs_per_s"],
                "jobs/s",
                5000,
                True,
                f"median of runs of {r['n']}; min {r['min']:.0f}, max {r['max']:.0f}",
            )
        )
    if "sbatch_loop" in results:
        r = results["sbatch_loop"]
        out.append(
            Row(
                "mgpu_sbatch in a shell loop",
                r["jobs_per_s"],
                "jobs/s",
                detail=f"{r['n']} commands",
            )
        )
    if "dispatch" in results:
        r = results["dispatch"]
        out.append(Row("dispatch latency, median", r["median"], "ms", 2, detail=_ms(r)))
        out.append(Row("dispatch latency, p99", r["p99"], "ms", 10))
    if "end_to_end" in results:
        r = results["end_to_end"]
        out.append(
            Row(
                "end-to-end trivial jobs, 8 GPUs",
                r["jobs_per_s"],
                "jobs/s",
                400,
                True,
                f"{r['n']} jobs in {r['seconds']:.2f} s",
            )
        )
    if "commands" in results:
        c = results["commands"]
        out.append(
            Row("mgpu_srun true", c["srun_true"]["median"], "ms", 40, detail=_ms(c["srun_true"]))
        )
        out.append(
            Row("mgpu_queue, empty", c["queue_empty"]["median"], "ms", detail=_ms(c["queue_empty"]))
        )
        q = c["queue_pending"]
        out.append(Row(f"mgpu_queue, {q['jobs']:,} pending", q["median"], "ms", 150, detail=_ms(q)))
        out.append(Row("mgpu_cancel", c["cancel"]["median"], "ms", detail=_ms(c["cancel"])))
    if "startup" in results:
        out.extend(_startup_rows(results["startup"]))
    out.extend(_web_rows(results))
    if "turn_switch" in results:
        r = results["turn_switch"]
        out.append(Row("GPU turn switch, median", r["median"], "ms", 10, detail=_ms(r)))
    if "idle" in results:
        for name, r in results["idle"].items():
            out.append(
                Row(
                    f"idle {name} CPU",
                    r["cpu_percent"],
                    "%",
                    0.5,
                    detail=f"over {r['seconds']:.0f} s",
                )
            )
            out.append(
                Row(f"idle {name} memory", r["rss_mb"], "MB", 60 if name == "node" else None)
            )
    targets_ms = {"top": 5.0, "scale": 50.0}
    for name, d in results.get("deps", {}).items():
        what = f"{d['nodes']:,} nodes, {d['pending']:,} pending, {d['dependent']:,} dependent"
        out.append(
            Row(
                f"pass with dependent jobs ({what})",
                d["pass_ms"]["median"],
                "ms",
                targets_ms[name],
                detail=_ms(d["pass_ms"]),
            )
        )
    for s in results.get("scale", []):
        size = f"{s['nodes']:,} nodes, {s['pending']:,} pending"
        out.append(
            Row(
                f"scheduling pass ({size})",
                s["pass_ms"]["median"],
                "ms",
                50,
                detail=_ms(s["pass_ms"]),
            )
        )
        out.append(Row(f"master memory ({size})", s["master_rss_mb"], "MB", 1024))
        out.append(
            Row(
                f"mgpu_queue ({size})",
                s["queue_list_ms"]["median"],
                "ms",
                detail=_ms(s["queue_list_ms"]),
            )
        )
    return out


def _startup_rows(s: dict[str, Any]) -> list[Row]:
    """The venv's command medians against their budget (bench.startup.table has the rest)."""
    out = [
        Row(f"start-up: {startup.label(s, key)}", d["median"], "ms", s["budget_ms"][key])
        for key, d in s["commands"].get("venv", {}).items()
    ]
    for name, loop in s["loop"].items():
        out.append(
            Row(
                f"start-up: sbatch in a shell loop ({name})",
                loop["jobs_per_s"],
                "jobs/s",
                detail=f"{loop['n']} commands; Slurm {startup.SLURM_LOOP_JOBS_PER_S:.0f}/s",
            )
        )
    return out


def table(rows: list[Row]) -> str:
    lines = [f"{'benchmark':<48} {'result':>14} {'target':>16}  verdict"]
    for r in rows:
        value = f"{r.value:,.2f} {r.unit}" if r.value < 100 else f"{r.value:,.0f} {r.unit}"
        lines.append(f"{r.name:<48} {value:>14} {r.target_text:>16}  {r.verdict}")
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Dispatch latency (distribution) and scheduling-pass time against cluster size."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files
    import matplotlib.pyplot as plt

    made = []
    if "dispatch" in results:
        samples = sorted(results["dispatch"]["samples_ms"])
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))])
        ax.axvline(2, color="green", linestyle="--", label="median target 2 ms")
        ax.axvline(10, color="red", linestyle="--", label="p99 target 10 ms")
        ax.set_xlabel("submit returned -> job's first instruction (ms)")
        ax.set_ylabel("fraction of jobs")
        ax.set_title("mgpu dispatch latency (CDF)")
        ax.legend()
        fig.tight_layout()
        made.append(out / "dispatch_latency.png")
        fig.savefig(made[-1], dpi=100)
        plt.close(fig)
    if results.get("scale"):
        scale = results["scale"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = [s["nodes"] for s in scale]
        ax.plot(x, [s["pass_ms"]["median"] for s in scale], marker="o", label="median")
        ax.plot(x, [s["pass_ms"]["max"] for s in scale], marker="x", label="max")
        ax.axhline(50, color="red", linestyle="--", label="target 50 ms")
        ax.set_xscale("log")
        ax.set_xlabel("nodes (8 GPUs each; pending jobs = 100 x nodes)")
        ax.set_ylabel("scheduling pass (ms)")
        ax.set_title("mgpu scheduling pass after a GPU frees")
        ax.legend()
        fig.tight_layout()
        made.append(out / "pass_time.png")
        fig.savefig(made[-1], dpi=100)
        plt.close(fig)
    return made


def _web_rows(results: dict[str, Any]) -> list[Row]:
    """The HTTP API's, /metrics' and the dashboard's figures (issue 14)."""
    out: list[Row] = []
    if "http" in results:
        r = results["http"]
        size = f"{r['jobs']:,} jobs, {r['nodes']:,} nodes x 8 GPUs"
        out.append(
            Row(f"HTTP job list ({size})", r["job_list_ms"]["median"], "ms", http.JOB_LIST_MS,
                detail=_ms(r["job_list_ms"]) + f", {r['job_list_bytes']:,} bytes")
        )  # fmt: skip
        out.append(
            Row(f"HTTP /metrics ({size})", r["metrics_ms"]["median"], "ms", http.METRICS_MS,
                detail=_ms(r["metrics_ms"]) + f", {r['metrics_bytes']:,} bytes")
        )  # fmt: skip
        out.append(
            Row("idle master CPU, HTTP listener on"
                + (", a dashboard open" if r.get("idle_with_dashboard") else ""),
                r["idle_cpu_percent"], "%",
                http.IDLE_CPU_PCT, detail=f"over {r['idle_seconds']:.0f} s")
        )  # fmt: skip
    if "dashboard" in results and "first_paint_ms" in results["dashboard"]:
        r = results["dashboard"]
        out.append(
            Row(f"dashboard first paint, {r['gpus']:,} GPUs", r["first_paint_ms"]["median"],
                "ms", dashboard.FIRST_PAINT_MS, detail=_ms(r["first_paint_ms"]))
        )  # fmt: skip
    return out
