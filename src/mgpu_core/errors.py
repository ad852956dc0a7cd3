"""One error hierarchy for the whole suite.

Errors cross the wire as data: ``{"t": "error", "id": N, "code": "...", "message": "..."}``.
Every class carries a stable ``code``; :func:`error_from_wire` rebuilds the typed exception on
the receiving side so callers catch classes, not strings. The codes are listed in
docs/protocol.md and must never change meaning.
"""

from __future__ import annotations


class MgpuError(Exception):
    """Base of every expected mgpu failure. ``str(err)`` is a one-line human message."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class ConfigError(MgpuError):
    code = "config_error"


class UsageError(ConfigError):
    """The command line is wrong: a bad option value, or a file it names that cannot be used.
    Raised by a client before anything is sent; its exit code is EXIT_USAGE. It keeps
    ConfigError's wire code and is not in the wire table, so no reply from the master can
    make a client report a usage error."""


class ProtocolError(MgpuError):
    """The peer broke the protocol (framing, schema, ordering)."""

    code = "protocol_error"


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"


class BadMessage(ProtocolError):
    """A frame decoded, but its content does not match the message's schema."""

    code = "bad_message"


class UnknownMessageType(ProtocolError):
    code = "unknown_message_type"


class VersionMismatch(ProtocolError):
    code = "version_mismatch"


class ConnectionClosed(MgpuError):
    code = "connection_closed"


class MasterUnreachable(MgpuError):
    code = "master_unreachable"


class InvalidRequest(MgpuError):
    """A well-formed request that cannot be honoured as asked (bad job spec, impossible size)."""

    code = "invalid_request"


class InvalidPartition(InvalidRequest):
    """A job names a partition the master's config does not have (Slurm's words: "invalid
    partition specified")."""

    code = "invalid_partition"


class JobNotFound(MgpuError):
    code = "job_not_found"


class InvalidJobState(MgpuError):
    """The job exists but is in a state where the operation makes no sense."""

    code = "invalid_job_state"


class NodeNotFound(MgpuError):
    code = "node_not_found"


class NodeConflict(MgpuError):
    """Another live agent already holds this node name."""

    code = "node_conflict"


class PermissionDenied(MgpuError):
    code = "permission_denied"


class AuthenticationFailed(MgpuError):
    """A peer could not prove who it is (wrong key, bad token, replayed proof)."""

    code = "authentication_failed"


class TooManyConnections(MgpuError):
    """The master is at its connection limit (in total or for the peer's address)."""

    code = "too_many_connections"


class LimitExceeded(MgpuError):
    """A per-user limit of the master (pending jobs, submissions per second) refused this."""

    code = "limit_exceeded"


class RegistrationRefused(MgpuError):
    """The master will not accept this node (wrong version, bad registration): do not retry."""

    code = "registration_refused"


class StorageError(MgpuError):
    """The master could not store a change (disk full, I/O error): nothing was acknowledged."""

    code = "storage_error"


class OutputUnavailable(MgpuError):
    """A job's output could not be read from its node (node away, file gone or not the job's)."""

    code = "output_unavailable"


class InternalError(MgpuError):
    code = "internal_error"


_BY_CODE: dict[str, type[MgpuError]] = {
    cls.code: cls
    for cls in (
        MgpuError,
        ConfigError,
        ProtocolError,
        FrameTooLarge,
        BadMessage,
        UnknownMessageType,
        VersionMismatch,
        ConnectionClosed,
        MasterUnreachable,
        InvalidRequest,
        InvalidPartition,
        JobNotFound,
        InvalidJobState,
        NodeNotFound,
        NodeConflict,
        PermissionDenied,
        AuthenticationFailed,
        TooManyConnections,
        LimitExceeded,
        RegistrationRefused,
        StorageError,
        OutputUnavailable,
        InternalError,
    )
}

ERROR_CODES: tuple[str, ...] = tuple(_BY_CODE)


def error_from_wire(code: object, message: object) -> MgpuError:
    """Rebuild the typed exception for an error reply (unknown codes become MgpuError)."""
    cls = _BY_CODE.get(code, MgpuError) if isinstance(code, str) else MgpuError
    err = cls(str(message))
    if cls is MgpuError and isinstance(code, str):
        err.code = code
    return err
