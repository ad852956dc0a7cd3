"""``mgpu_node``: command line -> NodeConfig -> Agent."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import click

from mgpu_core import __version__, auth, constants
from mgpu_core.cliutil import (
    StartupFailure,
    configure_logging,
    log_options,
    parsed_by,
    run_click,
)
from mgpu_core.config import Address, check_transport, resolve_master, with_tls
from mgpu_core.daemons import JobUser, NodeConfig, default_node_state_dir
from mgpu_core.errors import MgpuError, RegistrationRefused
from mgpu_core.exitcodes import EXIT_STARTUP_FAILURE
from mgpu_core.logformat import reopen_logs
from mgpu_core.units import parse_port_range, parse_size
from mgpu_node import join, nodeconf
from mgpu_node.agent import Agent, host_resources
from mgpu_node.cgroups import setup_isolation
from mgpu_node.containers import node_runtimes, parse_runtime_names
from mgpu_node.gpus import FakeGpuBackend, GpuBackend, detect_gpus, parse_fake_gpus
from mgpu_node.spool import lock_state_dir
from mgpu_node.workspaces import node_workspaces

DEFAULT_KEY_FILE = Path(constants.SYSTEM_KEY_FILE)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--master-host", default=None, help="Master host [default: from $MGPU_MASTER or 127.0.0.1]."
)
@click.option("--master-port", type=click.IntRange(1, 65535), default=None, help="Master port.")
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The cluster CA the master's TLS certificate must come from (the master's "
    "STATE_DIR/tls/ca.pem) [default: $MGPU_TLS_CA, else tls_ca in the config file, else "
    "ca.pem in ~/.config/mgpu or /etc/mgpu].",
)
@click.option(
    "--no-cgroups",
    is_flag=True,
    help="Do not run jobs in cgroups of their own (where something else isolates them, such "
    "as a container runtime): CUDA_VISIBLE_DEVICES is then the only GPU isolation.",
)
@click.option(
    "--container-runtimes",
    "container_runtimes",
    callback=parsed_by(parse_runtime_names),
    default=None,
    metavar="LIST",
    help="The container runtimes jobs with --container-image may use, in the order to prefer "
    "(a comma list of apptainer, singularity, podman, docker), or 'none'; each must be on "
    "PATH and run [default: every one of them found, in that order].",
)
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    help="Plain TCP to a master run with --insecure-plaintext (no TLS: the link can be read "
    "and injected on the network).",
)
@click.option("--node-id", default=None, help="Name of this node [default: hostname].")
@click.option(
    "--gpu-count",
    type=click.IntRange(0, 64),
    default=None,
    help="Use N fake GPUs instead of NVML (CPU-only hosts, tests).",
)
@click.option(
    "--fake-gpus",
    "fake_gpus",
    callback=parsed_by(parse_fake_gpus),
    default=None,
    metavar="SPEC",
    help="Use fake GPUs of these models instead of NVML: a comma list of MODEL*N or MODEL "
    "(one), e.g. h100*2 or a100*1,h100*1 (jobs ask for them with --gres=gpu:h100:1). Not "
    "with --gpu-count.",
)
@click.option(
    "--port-range",
    callback=parsed_by(parse_port_range),
    default=None,
    metavar="LO-HI",
    help="TCP ports the master may give this node's jobs that ask for --ports, e.g. "
    "20000-20999 (keep the range for mgpu: other programs should not listen in it) "
    "[default: none].",
)
@click.option(
    "--fallback-gpu-count",
    type=click.IntRange(0, 64),
    default=None,
    help="Fake GPUs to use only if NVML finds no GPU (local mode on a laptop).",
)
@click.option(
    "--cpus",
    type=click.IntRange(min=1),
    default=None,
    help="CPUs offered to jobs [default: all of this host's].",
)
@click.option(
    "--mem",
    "mem_bytes",
    callback=parsed_by(parse_size),
    default=None,
    help="Memory offered to jobs, e.g. 64G [default: all of this host's].",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="This node's key: its own, stored by mgpu_node join (CONFIG_DIR/"
    f"{constants.NODE_KEY_FILE}), or the legacy cluster key copied from the master's state "
    f"directory ({constants.KEY_FILE}, mode 0600) [default: CONFIG_DIR/{constants.NODE_KEY_FILE} "
    f"if it exists, else {DEFAULT_KEY_FILE}].",
)
@nodeconf.config_dir_option
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory: running jobs, unacknowledged exits, batch scripts, the fake GPU "
    f"fault file [default: ~/.local/state/mgpu/{constants.NODE_DIR_PREFIX}ID].",
)
@click.option(
    "--workspace-root",
    default=None,
    metavar="PATH",
    help="Where each user's persistent workspace is made (PATH/USER, mode 0700, the job's "
    "MGPU_WORKSPACE): local scratch, or a path several nodes share; only root (or the agent's "
    "user) may be able to change PATH and the directories above it. 'none': no workspaces "
    f"[default: STATE_DIR/{constants.WORKSPACES_DIR}].",
)
@click.option(
    "--workspace-quota",
    "workspace_quota_bytes",
    callback=parsed_by(parse_size),
    default=None,
    metavar="SIZE",
    help="Mark workspaces over SIZE (e.g. 500G) in listings, and warn their jobs on stderr "
    "at start; advisory: nothing is deleted or refused [default: none].",
)
@click.option(
    "--stop-jobs-on-exit",
    is_flag=True,
    help="On SIGTERM/SIGINT kill the jobs and report their exits before leaving, instead of "
    "leaving them running for the next agent to re-adopt.",
)
@click.option(
    "--job-user",
    type=click.Choice([u.value for u in JobUser]),
    default=JobUser.SUBMITTER.value,
    show_default=True,
    help="Whose account jobs run under. submitter: an agent running as root runs each job as "
    "the user who submitted it (an unknown user fails the job); an agent that is not root runs "
    "only its own user's jobs and fails the others. agent: every job runs as the agent's user, "
    "whoever submitted it (single-user setups).",
)
@click.option(
    "--allow-root-jobs",
    is_flag=True,
    help="Run jobs that would run as root (submitted by root, or --job-user agent under a root "
    "agent); without it they fail.",
)
@click.option(
    "--heartbeat-interval",
    "heartbeat_interval_s",
    type=click.FloatRange(min=0.05),
    default=constants.HEARTBEAT_INTERVAL_S,
    show_default=True,
    help="Seconds between heartbeats.",
)
@click.option(
    "--fence-timeout",
    "fence_timeout_s",
    type=click.FloatRange(min=0.1),
    default=constants.FENCE_TIMEOUT_S,
    show_default=True,
    help="Seconds without word from the master after which this node kills its jobs (the "
    "fence, kept by a guard process that outlives the agent), for a master that does not set "
    "it; a master that does sends its own.",
)
@log_options
@click.version_option(__version__, prog_name="mgpu_node")
def cli(
    *,
    master_host: str | None,
    master_port: int | None,
    tls_ca: Path | None,
    insecure_plaintext: bool,
    no_cgroups: bool,
    container_runtimes: list[str] | None,
    node_id: str | None,
    gpu_count: int | None,
    fake_gpus: list[str] | None,
    fallback_gpu_count: int | None,
    port_range: tuple[int, int] | None,
    cpus: int | None,
    mem_bytes: int | None,
    state_dir: Path | None,
    key_file: Path | None,
    config_dir: Path | None,
    stop_jobs_on_exit: bool,
    job_user: str,
    allow_root_jobs: bool,
    heartbeat_interval_s: float,
    fence_timeout_s: float,
    workspace_root: str | None,
    workspace_quota_bytes: int | None,
    log_level: str,
    log_format: str,
    log_file: Path | None,
) -> None:
    """The mgpu node agent: registers this host's GPUs with the master and runs its jobs."""
    if gpu_count is not None and fake_gpus is not None:
        raise click.UsageError("--gpu-count and --fake-gpus cannot be used together")
    configure_logging(log_level, log_format, log_file)
    try:
        config_dir = config_dir or nodeconf.default_config_dir()
        joined = nodeconf.load(config_dir)
        default = nodeconf.joined_master(joined) or resolve_master(None)
        master = with_tls(
            Address(master_host or default.host, master_port or default.port),
            str(tls_ca) if tls_ca else default.tls_ca or None,
            plaintext=insecure_plaintext,
        )
        check_transport(master)
        if master.tls_ca:
            from mgpu_core.tls import client_context

            client_context(Path(master.tls_ca))  # a bad CA file stops us here, in one line
        name = node_id or (joined.node_id if joined else socket.gethostname().split(".")[0])
        config = NodeConfig(
            master=master,
            node_id=name,
            fake_gpu_count=gpu_count,
            state_dir=state_dir or default_node_state_dir(name),
            heartbeat_interval_s=heartbeat_interval_s,
            fence_timeout_s=fence_timeout_s,
            job_user=JobUser(job_user),
            allow_root_jobs=allow_root_jobs,
            port_range=port_range or (),
        ).validate()
        cluster_key = auth.load_key(key_file or nodeconf.key_file(config_dir))
    except MgpuError as exc:
        raise StartupFailure(str(exc)) from None
    try:
        lock = lock_state_dir(config.state_dir)
    except OSError as exc:
        raise StartupFailure(str(exc)) from None
    try:
        workspaces = node_workspaces(
            workspace_root,
            default=config.state_dir / constants.WORKSPACES_DIR,
            node=config.node_id,
            quota_bytes=workspace_quota_bytes or 0,
        )
    except MgpuError as exc:
        raise StartupFailure(str(exc)) from None
    host_cpus, host_mem = host_resources()
    backend = _gpus(
        config, gpu_count=gpu_count, fake_gpus=fake_gpus, fallback_gpu_count=fallback_gpu_count
    )
    isolation = setup_isolation(
        node_id=config.node_id,
        state_dir=config.state_dir,
        gpu_numbers=backend.device_numbers(),
        disabled=no_cgroups,
    )
    agent = Agent(
        config,
        backend,
        cpus=cpus or host_cpus,
        mem_bytes=mem_bytes or host_mem,
        stop_jobs_on_exit=stop_jobs_on_exit,
        cluster_key=cluster_key,
        isolation=isolation,
        workspaces=workspaces,
        runtimes=node_runtimes(container_runtimes),
    )
    try:
        asyncio.run(_run(agent))
    except RegistrationRefused as exc:
        # The master proved another cluster key (over TLS): retrying would not help.
        click.echo(f"mgpu_node: {exc}", err=True)
        sys.exit(EXIT_STARTUP_FAILURE)
    finally:
        os.close(lock)


def _gpus(
    config: NodeConfig,
    *,
    gpu_count: int | None,
    fake_gpus: list[str] | None,
    fallback_gpu_count: int | None,
) -> GpuBackend:
    """NVML's GPUs, or ``gpu_count`` fakes, or fakes of the ``fake_gpus`` models;
    ``fallback_gpu_count`` fakes when NVML finds none."""
    faults = config.state_dir / constants.FAKE_GPU_FAULT_FILE
    name = config.node_id
    backend = detect_gpus(
        fake_count=gpu_count, node_name=name, fault_file=faults, fake_models=fake_gpus
    )
    faked = gpu_count is not None or fake_gpus is not None
    if fallback_gpu_count is not None and not faked and not backend.devices():
        backend = detect_gpus(fake_count=fallback_gpu_count, node_name=name, fault_file=faults)
    if isinstance(backend, FakeGpuBackend):  # device nodes for the devices cgroup to guard
        backend.make_device_nodes(config.state_dir / constants.FAKE_GPU_DEV_DIR)
    return backend


async def _run(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.should_exit.set)
    loop.add_signal_handler(signal.SIGHUP, reopen_logs)  # after a rotation of --log-file
    await agent.run()


def main() -> None:
    if sys.argv[1:2] == ["join"]:
        join.main(cli, sys.argv[2:])
    run_click(cli, "mgpu_node")


if __name__ == "__main__":
    main()
