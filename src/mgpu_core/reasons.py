"""Why a pending job waits, in Slurm's spelling (squeue's NODELIST(REASON) column): scripts
and people already know these words, so they are part of the interface. One enum, used by
the planner, the master's state and the tests; a new reason is added here first."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    PRIORITY = "Priority"  # behind higher-priority jobs (also: not examined by the last pass)
    RESOURCES = "Resources"  # first in line, waiting for GPUs/CPUs/memory to free
    NODE_NOT_AVAIL = "ReqNodeNotAvail"  # the nodes it may use are down or drained
    # It has --container-image and no up node it may use has a container runtime (mgpu's own:
    # Slurm has no such reason).
    NO_CONTAINER_RUNTIME = "NoContainerRuntime"
    QOS_GPUS = "QOSMaxGpuPerUserLimit"
    QOS_JOBS = "QOSMaxJobsPerUserLimit"
    HELD_USER = "JobHeldUser"
    HELD_ADMIN = "JobHeldAdmin"
    BEGIN_TIME = "BeginTime"
    DEPENDENCY = "Dependency"
    DEPENDENCY_NEVER = "DependencyNeverSatisfied"
    ARRAY_TASK_LIMIT = "JobArrayTaskLimit"
    NOT_IN_ROTATION = "NotInTurnRotation"  # the GPU turn queue is on and the user is not in it
    WAITING_TURN = "WaitingForTurn"
    # An admin's rule keeps the job from starting until an admin lifts it: the user's GPU
    # access was revoked (Slurm's reason for a GPU limit of 0 on the user's association), or
    # the job's QoS is not open to its user any more (its access list changed).
    GPU_ACCESS_REVOKED = "AssocGrpGRES"
    QOS_NOT_ALLOWED = "InvalidQOS"
    REQUEUED = "Requeued"  # back in the queue after an admin's requeue
    NODE_FAIL = "NodeFail"  # back in the queue after its node failed
    # None of the job's partitions (-p) may run it now: each is down or inactive (the
    # master's config), its MaxTime is below the job's limit, or it does not admit the job's
    # user or QoS (its config changed, or a group did, since the job was submitted).
    PARTITION_DOWN = "PartitionDown"
    PARTITION_INACTIVE = "PartitionInactive"
    PARTITION_TIME_LIMIT = "PartitionTimeLimit"
    PARTITION_CONFIG = "PartitionConfig"
