"""Pure renderers that print mgpu's job, node and partition rows as Slurm 23/24 prints them.

Nothing here does I/O or talks to the master: each function takes the rows the master sent
and returns text. Import cost is kept to the standard library's cheapest modules, because the
Slurm-compatible commands (squeue, sacct, sinfo, scontrol) must start in about 15 ms.
"""

# What only the command's own host can render: user and group ids (its passwd), and absolute
# times (its time zone, $SLURM_TIME_FORMAT). A format or order without these the master may
# render (the "render" of a queue request); squeue decides which without parsing the format.
LOCAL_KEYS = frozenset({"U", "G", "g", "e", "S", "V", "accruetime", "eligibletime"})
LOCAL_NAMES = frozenset(
    {"userid", "groupid", "groupname", "endtime", "starttime", "submittime"}
    | {"accruetime", "eligibletime"}
)
LOCAL_SORT = frozenset("gGUeSV")
