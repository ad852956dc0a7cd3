"""``mgpu_client admin``: user tokens for TCP clients (issue, list, revoke).

A token is for a user on hosts other than the master's (there the Unix socket needs none). The
admin creates it and hands it over; the user keeps it in ``~/.config/mgpu/token`` (mode 0600),
or root installs it there directly with ``--install``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from mgpu_client._common import CONTEXT, connect, handles_errors, master_option
from mgpu_core import auth, constants
from mgpu_core.errors import ConfigError
from mgpu_core.text import escape_controls

PROG = "mgpu_client admin token"


@click.group(context_settings=CONTEXT)
def admin() -> None:
    """Admin verbs: user tokens."""


@admin.group()
def token() -> None:
    """Tokens that let a user's TCP clients in (mgpu_client admin token create USER)."""


@token.command("create")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the token to this file (mode 0600) instead of printing it.",
)
@click.option(
    "--install", is_flag=True, help="As root: put it in USER's ~/.config/mgpu/token on this host."
)
@master_option
@click.argument("user")
@handles_errors(f"{PROG} create")
def create(*, user: str, output: Path | None, install: bool, master: str | None) -> None:
    """Issue a new token for USER (their other tokens stay valid)."""
    with connect(master) as client:
        data = client.request("token", action="create", user=user)
    text = data["token"] + "\n"
    if install:
        click.echo(f"token {data['token_id']} for {user} installed in {_install(user, text)}")
    elif output is not None:
        auth.write_private(output, text)
        click.echo(f"token {data['token_id']} for {user} written to {output}")
    else:
        click.echo(text, nl=False)
        click.echo(
            f"# {user}: umask 077; mkdir -p ~/.config/mgpu; cat > ~/.config/mgpu/token",
            err=True,
        )


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@master_option
@click.argument("user", required=False, default="")
@handles_errors(f"{PROG} list")
def list_tokens(*, user: str, as_json: bool, master: str | None) -> None:
    """The tokens in force (all, or USER's); never their secrets."""
    with connect(master) as client:
        rows = client.request("token", action="list", user=user)["tokens"]
    if as_json:
        click.echo(json.dumps({"tokens": rows}))
        return
    click.echo(f"{'TOKEN':<18} {'USER':<16} {'CREATED':<20} BY")
    for row in rows:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(row["created_s"]))
        user_, by = escape_controls(row["user"]), escape_controls(row["created_by"])
        click.echo(f"{escape_controls(row['token_id']):<18} {user_:<16} {created:<20} {by}")


@token.command("revoke")
@click.option("--id", "token_id", default="", help="Revoke only this token.")
@master_option
@click.argument("user", required=False, default="")
@handles_errors(f"{PROG} revoke")
def revoke(*, user: str, token_id: str, master: str | None) -> None:
    """Revoke USER's tokens (or one, --id): their sessions end at once."""
    if not user and not token_id:
        raise click.UsageError("name a USER or a token --id")
    with connect(master) as client:
        revoked = client.request("token", action="revoke", user=user, token_id=token_id)
    ids = revoked["revoked"]
    if not ids:
        raise ConfigError(f"no token matched ({user or token_id})")
    click.echo(f"revoked {len(ids)} token(s): {escape_controls(', '.join(ids))}")


def _install(user: str, text: str) -> Path:
    """Write the token into USER's config directory *as USER*, in a child process: root
    writing into a directory its user controls could be led by a symlink to any file."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"user {user} does not exist on this host") from None
    if os.geteuid() not in (0, entry.pw_uid):
        raise ConfigError(f"--install writes into {user}'s home: run it as root")
    directory = Path(entry.pw_dir) / ".config" / constants.APP_DIR
    token_file = directory / constants.USER_TOKEN_FILE
    pid = os.fork()
    if pid == 0:  # the child: become the user, write, report by exit status only
        status = 1
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.umask(0o077)
            directory.mkdir(parents=True, exist_ok=True)
            auth.write_private(token_file, text)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ConfigError(f"cannot write {token_file} as {user}")
    return token_file
