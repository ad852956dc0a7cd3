"""The master config's notice tables (see mgpu_server.net.notify):

```toml
[mail]
smtp = "mail.lab.org:25"        # the relay; absent: no mail
from = "mgpu@lab.org"
domain = "lab.org"              # a job's owner is USER@domain unless --mail-user says
starttls = false                # and user = "...", password = "..." for a relay that needs them
[[webhooks]]                    # every cluster event to a URL (repeat the table for more)
url = "https://hooks.lab.org/mgpu"
events = ["END", "FAIL"]        # absent: every event (mgpu_core.models.NOTIFY_EVENTS)
secret = "..."                  # signs each body: X-Mgpu-Signature: sha256=HMAC(secret, body)
[notify]
job_url_prefixes = ["https://hooks.slack.com/"]   # where a job's --notify may point (none: nowhere)
job_url_secret = "..."                             # signs --notify bodies
```
"""

from __future__ import annotations

from typing import Any

from mgpu_core.errors import ConfigError
from mgpu_core.models import NOTIFY_EVENTS
from mgpu_server.net.notify import NotifySettings, Webhook

_MAIL_KEYS = {"smtp", "from", "domain", "starttls", "user", "password"}


def notify_settings(where: str, data: dict[str, Any], cluster_name: str) -> NotifySettings:
    """[mail], [[webhooks]] and [notify] of the parsed config file (``where`` names it)."""
    mail = _table(where, "mail", data.get("mail"), _MAIL_KEYS)
    host, port = "", 25
    if "smtp" in mail:
        host, _, port_text = str(mail["smtp"]).rpartition(":")
        if not host or not port_text.isdigit():
            raise ConfigError(f'{where}: [mail] smtp must be "HOST:PORT"')
        port = int(port_text)
    starttls = mail.get("starttls", False)
    if not isinstance(starttls, bool):
        raise ConfigError(f"{where}: [mail] starttls must be true or false")
    notify = _table(where, "notify", data.get("notify"), {"job_url_prefixes", "job_url_secret"})
    prefixes = notify.get("job_url_prefixes", [])
    if not isinstance(prefixes, list) or not all(_is_url(p) for p in prefixes):
        raise ConfigError(f"{where}: [notify] job_url_prefixes must be a list of http(s) URLs")
    return NotifySettings(
        smtp_host=host,
        smtp_port=port,
        smtp_starttls=starttls,
        smtp_user=str(mail.get("user", "")),
        smtp_password=str(mail.get("password", "")),
        mail_from=str(mail.get("from", "mgpu@localhost")),
        mail_domain=str(mail.get("domain", "")),
        webhooks=tuple(_webhook(where, i, t) for i, t in enumerate(_hooks(where, data))),
        job_url_prefixes=tuple(prefixes),
        job_url_secret=str(notify.get("job_url_secret", "")).encode(),
        cluster_name=cluster_name,
    )


def _table(where: str, name: str, value: object, keys: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ConfigError(
            f"{where}: [{name}]: unknown setting '{unknown[0]}' ({', '.join(sorted(keys))})"
        )
    return value


def _hooks(where: str, data: dict[str, Any]) -> list[Any]:
    hooks = data.get("webhooks", [])
    if not isinstance(hooks, list):
        raise ConfigError(f"{where}: webhooks must be [[webhooks]] tables")
    return hooks


def _webhook(where: str, i: int, table: object) -> Webhook:
    hook = _table(where, f"webhooks #{i + 1}", table, {"url", "events", "secret"})
    url = hook.get("url")
    if not _is_url(url):
        raise ConfigError(f"{where}: [[webhooks]] #{i + 1} needs url = an http(s) URL")
    events = hook.get("events", [])
    if not isinstance(events, list) or not all(e in NOTIFY_EVENTS for e in events):
        raise ConfigError(
            f"{where}: [[webhooks]] #{i + 1} events must be a list of {', '.join(NOTIFY_EVENTS)}"
        )
    return Webhook(str(url), frozenset(events), str(hook.get("secret", "")).encode())


def _is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))
