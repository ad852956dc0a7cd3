"""Declarative field validators for incoming messages.

A schema is a tree of small validator objects; ``check(value, path)`` returns the value
(defaults filled in) or raises :class:`BadMessage` naming the exact field, e.g.
``field 'job.gpus': expected int, got str``. Limits on string length, list length and map
size live in the schema so that a hostile peer cannot make us hold arbitrary amounts of data
beyond what the frame limit already bounds. Unknown keys are dropped, so a newer peer can send
fields an older one ignores.
"""

from __future__ import annotations

from mgpu_core.errors import BadMessage

# Types only, and not typing's TYPE_CHECKING: the TCP client's handshake imports this module,
# and typing alone would cost every such command ~3 ms (see mgpu_client/client.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_MISSING: Any = object()


def _type_name(value: object) -> str:
    return type(value).__name__


class Validator:
    """Base: ``check(value, path) -> value``."""

    __slots__ = ()
    name = "value"

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def fail(self, value: object, path: str) -> BadMessage:
        return BadMessage(f"field '{path}': expected {self.name}, got {_type_name(value)}")


class Str(Validator):
    __slots__ = ("max_len", "min_len")
    name = "str"

    def __init__(self, max_len: int = 4096, *, min_len: int = 0) -> None:
        self.max_len = max_len
        self.min_len = min_len

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise self.fail(value, path)
        if not self.min_len <= len(value) <= self.max_len:
            raise BadMessage(
                f"field '{path}': length {len(value)} outside {self.min_len}..{self.max_len}"
            )
        return value


class OsStr(Str):
    """Text that may hold bytes that are not UTF-8: a command's argument, an environment entry,
    a batch script. Python gives such bytes (from ``sys.argv``, ``os.environ``, a file read with
    ``surrogateescape``) as a str with lone surrogates, which msgpack cannot pack as a str; such a
    str travels as bin holding the original bytes (:func:`mgpu_core.protocol.encode_frame`),
    and this turns it back into the same surrogate-escaped str (``os.fsdecode``), which
    ``subprocess`` and ``os.fsencode`` turn into the original bytes again. The length is in
    characters of that str: one per undecodable byte."""

    __slots__ = ()
    name = "str or bytes"

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "surrogateescape")
        return super().check(value, path)


class Bytes(Validator):
    __slots__ = ("max_len",)
    name = "bytes"

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bytes):
            raise self.fail(value, path)
        if len(value) > self.max_len:
            raise BadMessage(f"field '{path}': {len(value)} bytes exceeds {self.max_len}")
        return value


class Int(Validator):
    __slots__ = ("hi", "lo")
    name = "int"

    def __init__(self, lo: int = -(2**63), hi: int = 2**63 - 1) -> None:
        self.lo = lo
        self.hi = hi

    def check(self, value: Any, path: str) -> Any:
        # bool is an int subclass in Python; on the wire it is its own type.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(value, path)
        if not self.lo <= value <= self.hi:
            raise BadMessage(f"field '{path}': {value} outside {self.lo}..{self.hi}")
        return value


class Float(Validator):
    """A number; ints are accepted and converted."""

    __slots__ = ()
    name = "number"

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(value, path)
        if value != value or value in (float("inf"), float("-inf")):
            raise BadMessage(f"field '{path}': not a finite number")
        return float(value)


class Bool(Validator):
    __slots__ = ()
    name = "bool"

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise self.fail(value, path)
        return value


class OneOf(Validator):
    __slots__ = ("choices",)
    name = "one of"

    def __init__(self, *choices: str) -> None:
        self.choices = frozenset(choices)

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or value not in self.choices:
            allowed = ", ".join(sorted(self.choices))
            raise BadMessage(f"field '{path}': {value!r} is not one of {allowed}")
        return value


class Anything(Validator):
    """Any decoded value; for payloads the receiver does not interpret (bounded by the frame)."""

    __slots__ = ()

    def check(self, value: Any, path: str) -> Any:
        return value


class AnyOf(Validator):
    """The first alternative that accepts the value."""

    __slots__ = ("alternatives",)
    name = "one of several types"

    def __init__(self, *alternatives: Validator) -> None:
        self.alternatives = alternatives

    def check(self, value: Any, path: str) -> Any:
        for alternative in self.alternatives:
            try:
                return alternative.check(value, path)
            except BadMessage:
                continue
        kinds = " or ".join(a.name for a in self.alternatives)
        raise BadMessage(f"field '{path}': expected {kinds}, got {_type_name(value)}")


class Optional(Validator):
    """``None`` or the inner type."""

    __slots__ = ("inner",)

    def __init__(self, inner: Validator) -> None:
        self.inner = inner

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


class ListOf(Validator):
    __slots__ = ("item", "max_items")
    name = "list"

    def __init__(self, item: Validator, max_items: int = 1024) -> None:
        self.item = item
        self.max_items = max_items

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise self.fail(value, path)
        if len(value) > self.max_items:
            raise BadMessage(f"field '{path}': {len(value)} items exceeds {self.max_items}")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class MapOf(Validator):
    """A map with string keys (``key``: their validator, if not any str); ``max_total`` bounds
    the summed length of keys and str values."""

    __slots__ = ("key", "max_items", "max_total", "value")
    name = "map"

    def __init__(
        self,
        value: Validator,
        max_items: int = 4096,
        max_total: int = 1 << 20,
        *,
        key: Str | None = None,
    ) -> None:
        self.value = value
        self.max_items = max_items
        self.max_total = max_total
        self.key = key

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise self.fail(value, path)
        if len(value) > self.max_items:
            raise BadMessage(f"field '{path}': {len(value)} entries exceeds {self.max_items}")
        total = 0
        out = {}
        for k, v in value.items():
            if self.key is not None and isinstance(k, str | bytes):
                k = self.key.check(k, path)
            elif not isinstance(k, str):
                raise BadMessage(f"field '{path}': keys must be str")
            checked = self.value.check(v, f"{path}.{k}")
            total += len(k) + (len(checked) if isinstance(checked, str) else 0)
            out[k] = checked
        if total > self.max_total:
            raise BadMessage(f"field '{path}': {total} characters exceeds {self.max_total}")
        return out


class Record(Validator):
    """A map with named fields. ``fields`` maps name -> (validator, default).

    A default of :data:`REQUIRED` makes the field mandatory; any other default is filled in
    when the field is absent (so older peers that omit it still interoperate).
    """

    __slots__ = ("fields",)
    name = "map"

    def __init__(self, fields: Mapping[str, tuple[Validator, Any]]) -> None:
        self.fields = dict(fields)

    def check(self, value: Any, path: str = "") -> Any:
        if not isinstance(value, dict):
            raise self.fail(value, path or "message")
        out: dict[str, Any] = {}
        for key, (validator, default) in self.fields.items():
            sub = f"{path}.{key}" if path else key
            raw = value.get(key, _MISSING)
            if raw is _MISSING:
                if default is REQUIRED:
                    raise BadMessage(f"field '{sub}' is required")
                out[key] = default() if callable(default) else default
                continue
            out[key] = validator.check(raw, sub)
        return out


REQUIRED: Any = object()
