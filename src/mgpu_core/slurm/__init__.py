"""Pure renderers that print mgpu's job, node and partition rows as Slurm 23/24 prints them.

Nothing here does I/O or talks to the master: each function takes the rows the master sent
and returns text. Import cost is kept to the standard library's cheapest modules, because the
Slurm-compatible commands (squeue, sacct, sinfo, scontrol) must start in about 15 ms.
"""
