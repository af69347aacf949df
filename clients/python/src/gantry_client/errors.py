"""Errors of the client, one class per gRPC status code that gantry's coordinator answers with.

Every exception is a :class:`GantryError`. Those raised for a failed call keep the coordinator's
message (``message``) and the gRPC code (``code``, a :class:`grpc.StatusCode`), and their text
reads like the CLI's: ``submit: UNAUTHENTICATED: wrong token``. Those raised before any call (a
job spec with an unknown key, a missing token) have ``call`` set to ``None``.
"""

from __future__ import annotations

from typing import Optional

import grpc


class GantryError(Exception):
    """Base class of every error this package raises.

    Attributes:
        message: what went wrong; for a failed call, the coordinator's message verbatim.
        code: the gRPC status code (:class:`grpc.StatusCode`), or ``None`` for an error that
            is not about a call.
        call: the client method that failed (``"submit"``, ``"watch"``, ...), or ``None``.
    """

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, call: Optional[str] = None):
        self.message = message
        self.code = code
        self.call = call
        super().__init__(self._text())

    def _text(self) -> str:
        parts = (self.call, self.code.name if self.code is not None else None, self.message)
        return ": ".join(p for p in parts if p)


class ConfigError(GantryError):
    """The client cannot be set up: no token, an address it cannot dial, an unreadable CA file.
    ``code`` and ``call`` are ``None``."""


class InvalidArgument(GantryError):
    """The coordinator refused a request as malformed, e.g. a job spec with problems (each named
    by its key in the message, all at once)."""


class SpecError(InvalidArgument):
    """A job spec refused before it was sent: an unknown table or key, or a value of the wrong
    type. The message names the key, as the CLI does. ``code`` is ``INVALID_ARGUMENT``, what the
    coordinator answers for a bad spec, so ``except InvalidArgument`` catches both."""

    def __init__(self, message: str):
        super().__init__(message, grpc.StatusCode.INVALID_ARGUMENT, None)

    def _text(self) -> str:
        return f"job spec: {self.message}"


class NotFound(GantryError):
    """No job has this id."""


class PermissionDenied(GantryError):
    """The job would read or write storage outside the coordinator's allow-lists."""


class Unauthenticated(GantryError):
    """The token is missing or wrong (a worker token is not a job token)."""


class FailedPrecondition(GantryError):
    """The job cannot do that in its state, e.g. cancelling a job that already finished."""


class Unavailable(GantryError):
    """The coordinator cannot be reached, its job store failed, or it ended a watch before the
    job finished."""


class DeadlineExceeded(GantryError):
    """A call, or a watch, ran past its ``timeout``."""


class Internal(GantryError):
    """The coordinator failed on its side (an undecodable job record, a server error)."""


class JobNotSucceeded(GantryError):
    """:meth:`gantry_client.Client.wait` with ``check=True``: the job ended FAILED or CANCELLED.

    Attributes:
        job: the final :class:`gantry_client.pb.Job`.
    """

    def __init__(self, job):
        from .states import state_name

        self.job = job
        super().__init__(f"job {job.id} is {state_name(job.state)}: {job.reason}", None, "wait")


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
}


def from_rpc_error(call: str, error: grpc.RpcError) -> GantryError:
    """The :class:`GantryError` subclass for a failed gRPC call, keeping its code and message."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, GantryError)
    return cls(details or "", code, call)
