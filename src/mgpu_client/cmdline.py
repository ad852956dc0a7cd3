"""The command-line parser of every Slurm-style command, without click (importing click costs a
command ~30 ms, twice the whole budget of ``sbatch --wrap true``). It reads options as Slurm's
getopt_long does: ``-n 2``, ``-n2``, ``--ntasks 2``, ``--ntasks=2``, a cluster of short flags
(``-Hv``), any unambiguous prefix of a long name (``--part=gpu``), ``--`` to end the options;
the last of a repeated option wins unless the caller collects it. Options come from tables of
:class:`mgpu_client.optable.Opt`, which also make the help text.
"""

from __future__ import annotations

import sys

from mgpu_core.errors import UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

# What mgpu does with an option (mgpu_client.optable says why for each of Slurm's).
USE, QUIET, WARN, REFUSE = "use", "quiet", "warn", "refuse"

# Takes: 0 = a flag, 1 = a value, 2 = an optional value (only as --opt=value).
FLAG, VALUE, OPTIONAL = 0, 1, 2


class Opt:
    """One option: its names ("-n", "--ntasks"), the key it sets, whether it takes a value,
    the commands that know it, what mgpu does with it (and why, for WARN/REFUSE) and help."""

    __slots__ = ("commands", "dest", "help", "how", "metavar", "names", "takes", "why")

    def __init__(
        self,
        names: str,
        dest: str,
        takes: int,
        commands: str,
        how: str,
        help: str,
        *,
        why: str = "",
        metavar: str = "",
    ) -> None:
        self.names = tuple(names.split())
        self.dest = dest
        self.takes = takes
        self.commands = commands
        self.how = how
        self.help = help
        self.why = why
        self.metavar = metavar or ("" if takes == FLAG else dest.upper())


def index(options: Iterable[Opt]) -> dict[str, Opt]:
    """Every spelling of ``options`` -> its option."""
    return {name: opt for opt in options for name in opt.names}


def _long(name: str, table: dict[str, Opt]) -> Opt:
    opt = table.get(name)
    if opt is not None:
        return opt
    matches = {o for n, o in table.items() if n.startswith(name) and n.startswith("--")}
    if len(matches) == 1:
        return matches.pop()
    if matches:
        spellings = sorted(n for n, o in table.items() if n.startswith(name) and o in matches)
        raise UsageError(f"option '{name}' is ambiguous; possibilities: {' '.join(spellings)}")
    raise UsageError(f"unrecognized option '{name}'")


def parse(
    argv: list[str], table: dict[str, Opt], *, interspersed: bool = False
) -> tuple[list[tuple[Opt, Any]], list[str]]:
    """(the options in the order given, each with its value or True; the other arguments).

    Without ``interspersed``, the first argument that is not an option ends the options (sbatch
    SCRIPT ARGS, srun COMMAND ARGS); with it, options and operands may mix (squeue, scancel).
    """
    found: list[tuple[Opt, Any]] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            rest.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            if not interspersed:
                rest.extend(argv[i - 1 :])
                break
            rest.append(arg)
        elif arg.startswith("--"):
            i = _parse_long(arg, argv, i, table, found)
        else:
            i = _parse_short(arg, argv, i, table, found)
    return found, rest


def _parse_long(
    arg: str, argv: list[str], i: int, table: dict[str, Opt], found: list[tuple[Opt, Any]]
) -> int:
    """One ``--name[=value]`` (its value perhaps the next argument); the next index."""
    name, eq, value = arg.partition("=")
    opt = _long(name, table)
    if opt.takes == FLAG:
        if eq:
            raise UsageError(f"option '{opt.names[-1]}' doesn't allow an argument")
        found.append((opt, True))
    elif opt.takes == OPTIONAL:
        if not eq and i < len(argv) and argv[i].lstrip("-").isdigit():
            # "--nice 5000": getopt would take 5000 for the script, which never exists; a
            # whole number after an option whose value is optional is its value.
            value, eq, i = argv[i], "=", i + 1
        found.append((opt, value if eq else True))
    else:
        if not eq:
            if i >= len(argv):
                raise UsageError(f"option '{name}' requires an argument")
            value = argv[i]
            i += 1
        found.append((opt, value))
    return i


def _parse_short(
    arg: str, argv: list[str], i: int, table: dict[str, Opt], found: list[tuple[Opt, Any]]
) -> int:
    """A cluster of short options (flags, then perhaps one taking a value); the next index."""
    j = 1
    while j < len(arg):
        opt = table.get("-" + arg[j])
        if opt is None:
            raise UsageError(f"invalid option -- '{arg[j]}'")
        j += 1
        if opt.takes == FLAG:
            found.append((opt, True))
            continue
        value = arg[j:]
        if opt.takes == OPTIONAL:
            found.append((opt, value or True))
        else:
            if not value:
                if i >= len(argv):
                    raise UsageError(f"option requires an argument -- '{arg[j - 1]}'")
                value = argv[i]
                i += 1
            found.append((opt, value))
        break
    return i


HELP_WORDS = ("-h", "--help", "--usage")


def wants_help(argv: list[str], table: dict[str, Opt] | None = None) -> bool:
    """Whether the options part of ``argv`` (up to ``--`` or the first word that is not an
    option or an option's value, as ``table`` reads them) asks for help:
    ``sbatch --parsable -n 2 -h``."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in HELP_WORDS:
            return True
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return False
        name = arg.partition("=")[0] if arg.startswith("--") else arg[:2]
        opt = None
        if table is not None:
            try:
                opt = _long(name, table) if arg.startswith("--") else table.get(name)
            except UsageError:
                opt = None
        takes_next = opt is not None and opt.takes == VALUE
        if takes_next and ("=" in arg if arg.startswith("--") else len(arg) > 2):
            takes_next = False  # --name=value, -n2
        i += takes_next
    return False


def as_dict(found: list[tuple[Opt, Any]], collect: Iterable[str] = ()) -> dict[str, Any]:
    """The options by ``dest``: the last one given wins, but those named in ``collect``
    accumulate into a list (``sacct -j 1 -j 2``)."""
    many = set(collect)
    opts: dict[str, Any] = {}
    for opt, value in found:
        if opt.dest in many:
            opts.setdefault(opt.dest, []).append(value)
        else:
            opts[opt.dest] = value
    return opts


def number(opt_name: str, value: object, low: int = 0, high: int = 2**31 - 1) -> int:
    """An option's whole-number value, or a one-line UsageError naming the option."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        shown = text if len(text) <= 40 else text[:40] + "..."  # the line stays one screen line
        raise UsageError(f"invalid {opt_name} value '{shown}': a whole number expected")
    result = int(text)
    if not low <= result <= high:
        raise UsageError(f"invalid {opt_name} value {result}: expected {low} to {high}")
    return result


def render_help(prog: str, usage: str, summary: str, options: Iterable[Opt]) -> str:
    """``--help``: the usage line, a summary and one line per option, from the option table."""
    lines = [f"Usage: {prog} {usage}", "", summary, "", "Options:"]
    for opt in options:
        spelled = ", ".join(opt.names)
        if opt.takes == VALUE:
            spelled += f" {opt.metavar}"
        elif opt.takes == OPTIONAL:
            spelled += f"[={opt.metavar}]"
        note = opt.help
        if opt.how == "warn":
            note += f" [ignored: {opt.why}]"
        elif opt.how == "refuse":
            note += f" [refused: {opt.why}]"
        if len(spelled) < 28:
            lines.append(f"  {spelled:<28}{note}")
        else:
            lines.extend((f"  {spelled}", f"  {'':<28}{note}"))
    lines.append(f"  {'-h, --help':<28}Show this message and exit.")
    return "\n".join(lines) + "\n"


# What Slurm-named commands answer to -V/--version.
SLURM_VERSION = "slurm 23.11.0"

# The options every listing command (squeue, sinfo, sacct, scancel) has alike.
CLUSTERS = Opt("-M --clusters", "clusters", VALUE, "", WARN, "Clusters.", why="mgpu is one cluster")
VERBOSE = Opt("-v --verbose", "verbose", FLAG, "", QUIET, "Accepted.")
VERSION = Opt("-V --version", "version", FLAG, "", USE, "Print the version.")
USAGE = Opt("--usage", "usage", FLAG, "", USE, "Show this message and exit.")
LONG_HELP = Opt("--help", "help", FLAG, "", USE, "Show this message and exit.")
MASTER = Opt(
    "--master", "master", VALUE, "", USE, "The master: HOST:PORT or unix:PATH.", metavar="ADDR"
)


def answer_common(
    prog: str,
    found: list[tuple[Opt, Any]],
    rest: list[str],
    summary: str,
    options: Iterable[Opt],
    *,
    stray: str | None,
) -> bool:
    """What the listing commands do alike before their own work: --help/--usage, -V, words
    that are not options (refused with ``stray``, which names the first; None: the caller
    checks), a warning per ignored option. True when the command is done."""
    opts = {opt.dest: value for opt, value in found}
    if opts.get("help") or opts.get("usage"):
        sys.stdout.write(render_help(prog, "[OPTIONS]", summary, options))
        return True
    if opts.get("version"):
        sys.stdout.write(f"{SLURM_VERSION} (mgpu)\n")
        return True
    if rest and stray is not None:
        raise UsageError(stray.format(rest[0]))
    from mgpu_client.exits import warn

    for opt, _ in found:
        if opt.how == WARN:
            warn(prog, f"{opt.names[-1]} is ignored: {opt.why}")
    return False


def split_list(value: object) -> list[str]:
    """A comma list's items, blanks around them dropped (-u, -p, -n, -t ...)."""
    return [v.strip() for v in str(value or "").split(",") if v.strip()]
