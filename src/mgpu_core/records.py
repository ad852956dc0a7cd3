"""How a wire record is declared: each field once, with its type, default and validator.

A record is a dataclass whose fields carry their :mod:`mgpu_core.schema` validator in their
metadata, decorated with :func:`wire_record`::

    @wire_record
    @dataclass(frozen=True, slots=True, kw_only=True)
    class JobExited(WireRecord):
        job_id: int = field(metadata=wire(JOB_ID))
        reason: str = field(default="", metadata=wire(Str(MAX_REASON_LEN)))

A field without a default is required on the wire; a field with one is filled with it when
absent. From that one declaration :func:`wire_record` derives

* ``SCHEMA``, the :class:`RecordSchema` (a :class:`~mgpu_core.schema.Record`) that checks the
  wire form. The message tables in mgpu_core.messages use it, so a limit, a default and
  whether a field is required are never written twice;
* ``to_wire()``: the msgpack-ready dict, in field order, with nested records turned into
  dicts and containers copied (the record's lists are not shared with the message);
* ``from_wire(data)``: check ``data`` (``BadMessage`` naming the field, like any message),
  fill the defaults and build the record, nested records included;
* ``from_checked(data)``: build without checking, from a dict that a schema containing this
  record already checked (``validate`` in mgpu_core.messages) or that ``to_wire`` wrote (a
  store): one check per message, not two. Absent keys take the field's default.

Dataclasses are not packable by msgpack, so both directions are explicit (STYLE.md 2).
"""

from __future__ import annotations

import dataclasses

from mgpu_core.schema import REQUIRED, ListOf, MapOf, Optional, Record, Validator

# Types only, and not typing's TYPE_CHECKING: keep ``typing`` out of clients' start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, ClassVar, Self, TypeVar

    Convert = Callable[[Any], Any]
    R = TypeVar("R", bound="WireRecord")

WIRE = "mgpu.wire"  # the metadata key of a field's validator


def wire(check: Validator) -> dict[str, Validator]:
    """A field's metadata: ``field(default=0, metadata=wire(Int(0, 64)))``."""
    return {WIRE: check}


class RecordSchema(Record):
    """A record class's schema: checks a map into a dict with defaults filled in, exactly as
    :class:`Record` does, and knows its class, so that an enclosing record builds it."""

    __slots__ = ("record",)

    def __init__(
        self, record: type[WireRecord], fields: Mapping[str, tuple[Validator, Any]]
    ) -> None:
        super().__init__(fields)
        self.record = record


class WireRecord:
    """Base of the records: the wire conversions, driven by what :func:`wire_record` derived
    from the fields. Not a dataclass itself; each subclass is one."""

    __slots__ = ()

    SCHEMA: ClassVar[RecordSchema]
    _NAMES: ClassVar[tuple[str, ...]]
    _OUT: ClassVar[tuple[tuple[str, Convert], ...]]  # fields that to_wire converts or copies
    _IN: ClassVar[tuple[tuple[str, Convert], ...]]  # fields that from_checked builds

    def to_wire(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its generic deep copy costs ~0.1 ms a record, paid for every
        # job the master launches or stores.
        out = {name: getattr(self, name) for name in self._NAMES}
        for name, convert in self._OUT:
            out[name] = convert(out[name])
        return out

    @classmethod
    def from_checked(cls, data: Mapping[str, Any]) -> Self:
        values = {name: data[name] for name in cls._NAMES if name in data}
        for name, build in cls._IN:
            if name in values:
                values[name] = build(values[name])
        return cls(**values)

    @classmethod
    def from_wire(cls, data: object) -> Self:
        return cls.from_checked(cls.SCHEMA.check(data))


def _copy_list(items: list[Any]) -> list[Any]:
    return list(items)


def _copy_map(items: dict[str, Any]) -> dict[str, Any]:
    return dict(items)


def _to_wire(record: WireRecord) -> dict[str, Any]:
    return record.to_wire()


def _each(convert: Convert) -> Convert:
    return lambda items: [convert(item) for item in items]


def _unless_none(convert: Convert) -> Convert:
    return lambda value: None if value is None else convert(value)


def _converters(check: Validator) -> tuple[Convert | None, Convert | None]:
    """(to the wire, from a checked value) for a field checked by ``check``; None where the
    value passes as it is."""
    if isinstance(check, RecordSchema):
        return _to_wire, check.record.from_checked
    if isinstance(check, Optional):
        out, build = _converters(check.inner)
        return (
            None if out is None else _unless_none(out),
            None if build is None else _unless_none(build),
        )
    if isinstance(check, ListOf):
        out, build = _converters(check.item)
        return (
            _copy_list if out is None else _each(out),
            None if build is None else _each(build),
        )
    if isinstance(check, MapOf):
        return _copy_map, None  # values are never records
    return None, None


def wire_record(cls: type[R]) -> type[R]:
    """Derive ``SCHEMA`` and the conversions of the dataclass ``cls`` from its fields (every
    field must carry a validator: a record has nothing that is not on the wire)."""
    schema: dict[str, tuple[Validator, Any]] = {}
    outs: list[tuple[str, Convert]] = []
    ins: list[tuple[str, Convert]] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        check = f.metadata.get(WIRE)
        if not isinstance(check, Validator):
            raise TypeError(f"{cls.__name__}.{f.name} has no wire validator")
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory  # Record calls it: a fresh list per message
        else:
            default = REQUIRED
        schema[f.name] = (check, default)
        out, build = _converters(check)
        if out is not None:
            outs.append((f.name, out))
        if build is not None:
            ins.append((f.name, build))
    cls.SCHEMA = RecordSchema(cls, schema)
    cls._NAMES = tuple(schema)
    cls._OUT = tuple(outs)
    cls._IN = tuple(ins)
    return cls
