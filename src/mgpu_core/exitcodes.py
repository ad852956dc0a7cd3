"""The exit codes of every mgpu command, in one table (README.md's "Everyday use" shows it).

Scripts branch on these, so each class of failure has its own code and none changes meaning:

====  =======================  ============================================================
code  name                     meaning
====  =======================  ============================================================
0     EXIT_OK                  success
1     EXIT_ERROR               the request failed: the master answered with an error (unknown
                               job, permission, policy), or another error (a bad config file)
2     EXIT_UNREACHABLE         the master could not be reached (nothing was done; retry later)
3     EXIT_STARTUP_FAILURE     a daemon (mgpu_master, mgpu_node) could not start: port in use,
                               unreadable state or key, refused registration
64    EXIT_USAGE               the command line is wrong (an unknown option, a bad value, a
                               script that cannot be read or used); nothing was sent
128+N                          srun/attach: the job was killed by signal N (130: interrupted)
====  =======================  ============================================================

Why these numbers: 1 is what Slurm's commands return for any failure. 2 meant "master
unreachable" before this table existed and scripts retry on it, so it stays, and command-line
mistakes, which argparse and click report as 2, move to 64, ``EX_USAGE`` of BSD's sysexits.h.
3 is uvicorn's ``STARTUP_FAILURE``. 128+N is the shell's convention for death by a signal.
``mgpu_srun`` and ``mgpu_client attach`` exit with the *job's* code when the job ran, which may
be any of these numbers: a job's own exit status is passed on unchanged, as Slurm's srun does.

Only integers live here: every client imports this at start-up.
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_STARTUP_FAILURE = 3
EXIT_USAGE = 64
# A job killed by signal N exits 128+N, as a shell reports it.
EXIT_SIGNAL_BASE = 128
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + 2  # SIGINT: Ctrl-C
