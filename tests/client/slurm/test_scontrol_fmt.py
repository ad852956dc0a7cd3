"""``scontrol show`` records (mgpu_core.slurm.scontrol_fmt).

The key order and line grouping are Slurm 23.11's: src/api/job_info.c
``slurm_sprint_job_info``, node_info.c ``slurm_sprint_node_table``, partition_info.c
``slurm_sprint_partition_info`` and config_info.c ``slurm_print_key_pairs`` ("%-23s = %s").
Lines after the first are indented by three spaces (``line_end = "\\n   "``); a job record
ends with one more line end, then every record with "\\n\\n" (one-liners: " " and "\\n").
"""

from __future__ import annotations

from typing import Any

from mgpu_core.slurm import scontrol_fmt as sc

T0 = 1_700_000_000  # 2023-11-14T22:13:20 UTC
NOW = T0 + 90


def job(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": 12345, "array_job_id": None, "array_task_id": None, "name": "train",
        "user": "root", "state": "RUNNING", "reason": "", "node": "node1",
        "partition": "gpu", "account": "proj", "qos": "normal", "cpus": 4, "ntasks": 1,
        "gpus": 1, "gpu_type": "h100", "mem_bytes": 16 << 30, "time_limit_s": 3600,
        "submit_time": T0 - 10, "eligible_time": T0 - 10, "start_time": T0, "end_time": 0,
        "exit_code": None, "signal": None, "restart_count": 0, "priority": 4294.0,
        "nice": 0, "dependency": "", "interactive": False, "command": "/home/root/train.sh",
        "cwd": "/home/root", "stdout_path": "", "stderr_path": "", "submit_host": "login1",
    }  # fmt: skip
    row.update(fields)
    return row


def test_show_running_batch_job() -> None:
    assert sc.show_job(job(), now=NOW) == (
        "JobId=12345 JobName=train\n"
        "   UserId=root(0) GroupId=root(0) MCS_label=N/A\n"
        "   Priority=4294 Nice=0 Account=proj QOS=normal\n"
        "   JobState=RUNNING Reason=None Dependency=(null)\n"
        "   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0\n"
        "   RunTime=00:01:30 TimeLimit=01:00:00 TimeMin=N/A\n"
        "   SubmitTime=2023-11-14T22:13:10 EligibleTime=2023-11-14T22:13:10\n"
        "   AccrueTime=2023-11-14T22:13:10\n"
        "   StartTime=2023-11-14T22:13:20 EndTime=2023-11-14T23:13:20 Deadline=N/A\n"
        "   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2023-11-14T22:13:20 Scheduler=Main\n"
        "   Partition=gpu AllocNode:Sid=login1:0\n"
        "   ReqNodeList=(null) ExcNodeList=(null)\n"
        "   NodeList=node1\n"
        "   BatchHost=node1\n"
        "   NumNodes=1 NumCPUs=4 NumTasks=1 CPUs/Task=4 ReqB:S:C:T=0:0:*:*\n"
        "   ReqTRES=cpu=4,mem=16G,node=1,billing=4,gres/gpu=1,gres/gpu:h100=1\n"
        "   AllocTRES=cpu=4,mem=16G,node=1,billing=4,gres/gpu=1,gres/gpu:h100=1\n"
        "   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*\n"
        "   MinCPUsNode=4 MinMemoryNode=16G MinTmpDiskNode=0\n"
        "   Features=(null) DelayBoot=00:00:00\n"
        "   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)\n"
        "   Command=/home/root/train.sh\n"
        "   WorkDir=/home/root\n"
        "   StdErr=/home/root/slurm-12345.out\n"
        "   StdIn=/dev/null\n"
        "   StdOut=/home/root/slurm-12345.out\n"
        "   Power=\n"
        "   TresPerNode=gres/gpu:h100:1\n"
        "   \n"
        "\n"
    )


def test_show_pending_array_task_one_liner() -> None:
    pending = job(
        job_id=121, array_job_id=120, array_task_id=3, state="PENDING",
        reason="Dependency with spaces", node="", start_time=0, gpus=0, eligible_time=0,
        time_limit_s=0, interactive=True, stdout_path="", dependency="afterok:119",
    )  # fmt: skip
    out = sc.show_job(pending, now=NOW, one_liner=True)
    assert out.endswith(" Power= \n") and out.count("\n") == 1
    assert out.startswith("JobId=121 ArrayJobId=120 ArrayTaskId=3 JobName=train UserId=")
    assert " JobState=PENDING Reason=Dependency_with_spaces Dependency=afterok:119 " in out
    assert " BatchFlag=0 " in out
    assert " RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A " in out
    assert " EligibleTime=Unknown AccrueTime=Unknown StartTime=Unknown EndTime=Unknown " in out
    assert " NodeList= NumNodes=1 " in out  # no BatchHost before the job runs
    assert " AllocTRES=(null) " in out
    assert "StdOut" not in out  # interactive jobs have no batch output lines


def test_show_ended_job_with_details() -> None:
    ended = job(state="FAILED", end_time=T0 + 30, exit_code=3, reason="NonZeroExitCode",
                stdout_path="/tmp/out-%j.log")  # fmt: skip
    out = sc.show_job(ended, now=NOW, details=True)
    assert (
        "   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0\n   DerivedExitCode=0:0\n" in out
    )
    assert "   RunTime=00:00:30 TimeLimit=01:00:00 TimeMin=N/A\n" in out
    assert " EndTime=2023-11-14T22:13:50 " in out
    assert "   StdErr=/tmp/out-12345.log\n   StdIn=/dev/null\n   StdOut=/tmp/out-12345.log\n" in out


def test_show_node() -> None:
    gpus = [{"index": i, "model": "h100", "job_id": 5 if i == 1 else None} for i in range(4)]
    node = {
        "node_id": "node1", "hostname": "node1.example", "address": "10.0.0.1",
        "state": "mixed", "down_reason": "", "drain_reason": "", "cpus": 32,
        "cpus_alloc": 4, "mem_bytes": 256 << 30, "mem_alloc_bytes": 16 << 30, "gpus": gpus,
        "jobs": [5], "partitions": ["gpu", "debug"], "agent_version": "1.4.0",
    }  # fmt: skip
    assert sc.show_node(node, details=True) == (
        "NodeName=node1 CoresPerSocket=1 \n"
        "   CPUAlloc=4 CPUEfctv=32 CPUTot=32 CPULoad=0.00\n"
        "   AvailableFeatures=(null)\n"
        "   ActiveFeatures=(null)\n"
        "   Gres=gpu:h100:4\n"
        "   GresUsed=gpu:h100:1(IDX:1)\n"
        "   NodeAddr=10.0.0.1 NodeHostName=node1.example Version=1.4.0\n"
        "   RealMemory=262144 AllocMem=16384 FreeMem=N/A Sockets=32 Boards=1\n"
        "   State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A\n"
        "   Partitions=gpu,debug \n"
        "   BootTime=None SlurmdStartTime=None\n"
        "   LastBusyTime=Unknown ResumeAfterTime=None\n"
        "   CfgTRES=cpu=32,mem=256G,billing=32,gres/gpu=4\n"
        "   AllocTRES=cpu=4,mem=16G,gres/gpu=1\n"
        "   CapWatts=n/a\n"
        "   CurrentWatts=0 AveWatts=0\n"
        "   ExtSensorsJoules=n/a ExtSensorsWatts=0 ExtSensorsTemp=n/a\n"
        "\n"
    )


def test_show_drained_node_with_a_reason() -> None:
    node = {"node_id": "n7", "state": "drain", "drain_reason": "bad fan\nswap it",
            "cpus": 8, "mem_bytes": 0}  # fmt: skip
    out = sc.show_node(node)
    assert "   Gres=(null)\n   NodeAddr=n7 NodeHostName=n7 \n" in out
    assert "   State=IDLE+DRAIN ThreadsPerCore=1 " in out
    assert "   AllocTRES=\n" in out
    # node_info.c: the reason's further lines continue under the first.
    assert out.endswith("ExtSensorsTemp=n/a\n   Reason=bad fan\n          swap it\n\n")


def test_show_partition() -> None:
    nodes = [{"node_id": f"node{i}", "cpus": 32, "mem_bytes": 256 << 30,
              "gpus": [{}] * 4} for i in (1, 2)]  # fmt: skip
    part = {"name": "gpu", "default": True, "state": "UP", "nodes": ["node1", "node2"],
            "max_time_s": 86400, "default_time_s": 3600, "allowed_qos": ["normal", "high"],
            "allowed_groups": [], "priority_tier": 2}  # fmt: skip
    assert sc.show_partition(part, nodes) == (
        "PartitionName=gpu\n"
        "   AllowGroups=ALL AllowAccounts=ALL AllowQos=normal,high\n"
        "   AllocNodes=ALL Default=YES QoS=N/A\n"
        "   DefaultTime=01:00:00 DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO\n"
        "   MaxNodes=UNLIMITED MaxTime=1-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED"
        " MaxCPUsPerSocket=UNLIMITED\n"
        "   Nodes=node[1-2]\n"
        "   PriorityJobFactor=1 PriorityTier=2 RootOnly=NO ReqResv=NO OverSubscribe=NO\n"
        "   OverTimeLimit=NONE PreemptMode=OFF\n"
        "   State=UP TotalCPUs=64 TotalNodes=2 SelectTypeParameters=NONE\n"
        "   JobDefaults=(null)\n"
        "   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED\n"
        "   TRES=cpu=64,mem=512G,node=2,billing=64,gres/gpu=8\n"
        "\n"
    )
    empty = sc.show_partition({"name": "idle", "state": "DOWN"}, one_liner=True)
    assert empty.startswith("PartitionName=idle AllowGroups=ALL ")
    assert " Default=NO " in empty and " MaxTime=UNLIMITED " in empty
    assert " Nodes=(null) " in empty and " State=DOWN TotalCPUs=0 TotalNodes=0 " in empty
    assert empty.endswith(" TRES=cpu=0,mem=0,node=0,billing=0\n")


def test_show_config() -> None:
    pairs = [("ClusterName", "mgpu"), ("SchedulerType", "sched/backfill")]
    assert sc.show_config(pairs, updated=T0) == (
        "Configuration data as of 2023-11-14T22:13:20\n"
        "ClusterName             = mgpu\n"
        "SchedulerType           = sched/backfill\n"
    )
