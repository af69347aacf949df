"""The job API client: :class:`Client`."""

from __future__ import annotations

import builtins
import os
import pathlib
from collections.abc import Iterable, Iterator
from typing import Callable, Optional, Union

import grpc

from . import events as ev
from . import spec as specs
from ._stubs import pb, pb_grpc
from .errors import ConfigError, GantryError, Internal, JobNotSucceeded, Unavailable, from_rpc_error
from .states import is_final, state_name, state_value

#: The coordinator address when neither ``address`` nor ``$GANTRY_COORDINATOR`` is given (the
#: CLI's default).
DEFAULT_ADDRESS = "http://127.0.0.1:50051"


class Client:
    """A client of gantry's job API (``gantry.v1.JobService``) on one coordinator.

    Every call carries ``authorization: Bearer <token>``, as ``coordinator submit|status|...``
    sends it. Use it as a context manager, or call :meth:`close`, to close the channel::

        with gantry_client.Client() as client:    # $GANTRY_COORDINATOR, $GANTRY_TOKEN
            job = client.submit("job.toml")
            for event in client.watch(job.id):
                print(event)

    Args:
        address: ``http://HOST:PORT``, ``https://HOST:PORT`` (TLS) or ``HOST:PORT`` (plain,
            like ``http://``). Default: ``$GANTRY_COORDINATOR``, else ``http://127.0.0.1:50051``.
        token: the job API token (not the worker token). Default: the contents of
            ``token_file``, else ``$GANTRY_TOKEN``. Surrounding whitespace is dropped.
        tls_ca: PEM file of the CA that signed the coordinator's certificate. Default:
            ``$GANTRY_TLS_CA``; without either, ``https://`` trusts the system's CAs. As with
            the CLI, a CA also turns TLS on for an address without ``https://``.
        token_file: a file holding the token (e.g. ``job.token``), instead of ``token``.
        timeout: seconds each call but :meth:`watch` and :meth:`wait` may take (``None``: no
            limit); past it the call raises :class:`DeadlineExceeded`.
        options: extra gRPC channel options, ``[(name, value), ...]``.

    Raises:
        ConfigError: no token, a token that cannot go in a header, an address that is not
            ``http(s)://HOST:PORT`` or ``HOST:PORT``, an unreadable CA file.

    The channel connects on first use: a coordinator that is down shows up as
    :class:`Unavailable` on calls, not here.
    """

    def __init__(
        self,
        address: Optional[str] = None,
        token: Optional[str] = None,
        tls_ca: Optional[Union[str, os.PathLike]] = None,
        *,
        token_file: Optional[Union[str, os.PathLike]] = None,
        timeout: Optional[float] = 60.0,
        options: Optional[Iterable[tuple[str, object]]] = None,
    ):
        self.address = address or os.environ.get("GANTRY_COORDINATOR") or DEFAULT_ADDRESS
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {_load_token(token, token_file)}"),)
        ca = tls_ca if tls_ca is not None else os.environ.get("GANTRY_TLS_CA") or None
        target, secure = _parse_address(self.address, ca is not None)
        options = list(options or [])
        if secure:
            pem = None
            if ca is not None:
                try:
                    pem = pathlib.Path(ca).read_bytes()
                except OSError as error:
                    raise ConfigError(f"cannot read the CA certificate {ca}: {error.strerror or error}") from error
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=pem), options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self._jobs = pb_grpc.JobServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; running watches end with an error."""
        self._channel.close()

    @property
    def stub(self) -> pb_grpc.JobServiceStub:
        """The generated stub, for calls this class does not wrap; pass ``metadata=`` yourself."""
        return self._jobs

    def submit(self, spec: specs.SpecLike) -> pb.Job:
        """Submits a job; returns it as queued (``.id`` is its id, e.g. ``job-000042``).

        Args:
            spec: a dict shaped like the TOML job file (``{"data": {...}, "train": {...},
                ...}``, see :mod:`gantry_client.spec`), the path of a TOML job file, or a
                :class:`pb.JobSpec` (sent as it is). In a dict or a file, a relative local
                ``data.url`` or ``output.url`` is made absolute against the current folder, as
                ``coordinator submit`` does.

        Raises:
            SpecError: an unknown table or key or a value of the wrong type, before sending.
            InvalidArgument: the coordinator found problems (all listed in the message, each
                naming its key: a bad value, a dataset it cannot open or that does not fit).
            PermissionDenied: the job would touch storage outside the coordinator's allow-lists.
            Unauthenticated: the token is wrong.
            Unavailable: the coordinator cannot be reached.
        """
        request = pb.SubmitJobRequest(spec=specs.to_spec(spec))
        return self._call("submit", self._jobs.SubmitJob, request).job

    def get(self, job_id: str) -> pb.Job:
        """One job, with its spec (every default filled in), state, reason, attempts, last
        metrics and last checkpoint.

        Raises:
            NotFound: no job has this id.
        """
        return self._call("get", self._jobs.GetJob, pb.GetJobRequest(id=job_id))

    def list(
        self, states: Optional[Iterable[Union[str, int]]] = None, *, page_size: Optional[int] = None
    ) -> builtins.list[pb.Job]:
        """Jobs, oldest first.

        Args:
            states: only jobs in these states (names in any case: ``["running", "queued"]``,
                or :class:`pb.JobState` values); all jobs when empty or ``None``.
            page_size: jobs per call, where the coordinator pages its answers (``ListJobs``
                with ``page_size``/``page_token``); every page is fetched either way.

        Raises:
            ValueError: a state name that is not a job state.
        """
        if isinstance(states, (str, int)):
            states = [states]
        request = pb.ListJobsRequest(states=[state_value(s) for s in states or []])
        request_fields = pb.ListJobsRequest.DESCRIPTOR.fields_by_name
        paged = "page_token" in request_fields and "next_page_token" in pb.ListJobsResponse.DESCRIPTOR.fields_by_name
        if page_size is not None and "page_size" in request_fields:
            request.page_size = page_size
        jobs = []
        seen = set()
        while True:
            response = self._call("list", self._jobs.ListJobs, request)
            jobs.extend(response.jobs)
            token = response.next_page_token if paged else ""
            if not token:
                return jobs
            if token in seen:
                raise Internal(f"the coordinator answered page token {token!r} twice", None, "list")
            seen.add(token)
            request.page_token = token

    def cancel(self, job_id: str, reason: str = "") -> pb.Job:
        """Cancels a queued or running job (a running one stops within one training step);
        returns it, CANCELLED, with ``reason`` recorded.

        Raises:
            NotFound: no job has this id.
            FailedPrecondition: the job has already finished.
        """
        return self._call("cancel", self._jobs.CancelJob, pb.CancelJobRequest(id=job_id, reason=reason))

    def watch(self, job_id: str, timeout: Optional[float] = None) -> Iterator[ev.Event]:
        """Follows a job: an iterator of :class:`JobUpdate`, :class:`Step`, :class:`Checkpoint`
        events, ending with one :class:`End` when the job reaches a final state. The first
        event is a :class:`JobUpdate` with the job as it is (a finished job gives that and
        :class:`End` at once).

        The call is made here, so an unknown id raises :class:`NotFound` at once. Closing the
        iterator (``.close()``, or leaving a ``for`` loop early and dropping it) cancels the
        stream.

        Args:
            timeout: seconds the whole watch may take (``None``: until the job ends).

        Raises:
            NotFound: no job has this id.
            Unavailable: (while iterating) the coordinator went away before the job ended;
                watch again to go on.
            DeadlineExceeded: (while iterating) ``timeout`` passed.
        """
        call = self._jobs.WatchJob(pb.WatchJobRequest(id=job_id), metadata=self._metadata, timeout=timeout)
        try:
            first = next(call)
        except StopIteration:
            raise Internal(f"the stream of job {job_id} ended before the job's state arrived", None, "watch") from None
        except grpc.RpcError as error:
            raise from_rpc_error("watch", error) from None
        return _events(call, first)

    def wait(
        self,
        job_id: str,
        timeout: Optional[float] = None,
        *,
        check: bool = False,
        on_event: Optional[Callable[[ev.Event], None]] = None,
    ) -> pb.Job:
        """Follows a job to its end; returns the final job.

        Args:
            timeout: seconds to wait at most (``None``: no limit).
            check: raise :class:`JobNotSucceeded` unless the job SUCCEEDED.
            on_event: called with every event of the watch (progress reporting).

        Raises:
            JobNotSucceeded: with ``check``, the job FAILED or was CANCELLED.
            DeadlineExceeded: ``timeout`` passed.
        """
        for event in self.watch(job_id, timeout=timeout):
            if on_event is not None:
                on_event(event)
            if isinstance(event, ev.End):
                if check and not event.succeeded:
                    raise JobNotSucceeded(event.job)
                return event.job
        raise AssertionError("a watch ends with End or an error")  # pragma: no cover

    def _call(self, name: str, method, request):
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(name, error) from None


def _events(call, first: pb.JobEvent) -> Iterator[ev.Event]:
    """The events of a watch, `first` included."""
    last: Optional[pb.Job] = None
    try:
        stream = _chain(first, call)
        while True:
            try:
                event = next(stream)
            except StopIteration:
                break
            except grpc.RpcError as error:
                raise from_rpc_error("watch", error) from None
            kind = event.WhichOneof("event")
            if kind == "job":
                yield ev.job_update(event.job, last)
                last = event.job
                if is_final(event.job.state):
                    yield ev.end(event.job)
                    return
            elif kind == "metrics":
                yield ev.Step.from_pb(event.metrics)
            elif kind == "checkpoint":
                yield ev.Checkpoint(event.checkpoint.step, event.checkpoint.url)
            # An event kind this client does not know (a newer coordinator's) is skipped.
        if last is None:
            raise Internal("the stream ended before the job's state arrived", None, "watch")
        raise Unavailable(
            f"the coordinator ended the stream while job {last.id} was {state_name(last.state)}", None, "watch"
        )
    finally:
        call.cancel()


def _chain(first, rest):
    yield first
    yield from rest


def _load_token(token: Optional[str], token_file: Optional[Union[str, os.PathLike]]) -> str:
    """The token from the argument, the file or $GANTRY_TOKEN, checked as the CLI checks it."""
    if token is not None and token_file is not None:
        raise ConfigError("pass token or token_file, not both")
    if token is not None:
        origin, text = "token", token
    elif token_file is not None:
        origin = str(token_file)
        try:
            text = pathlib.Path(token_file).read_text()
        except OSError as error:
            raise ConfigError(f"cannot read the token file {token_file}: {error.strerror or error}") from error
    elif "GANTRY_TOKEN" in os.environ:
        origin, text = "$GANTRY_TOKEN", os.environ["GANTRY_TOKEN"]
    else:
        raise ConfigError("no token: pass token= or token_file=, or set GANTRY_TOKEN")
    text = text.strip()
    if not text:
        raise ConfigError(f"{origin}: the token is empty")
    if not all(33 <= ord(c) <= 126 for c in text):
        raise ConfigError(f"{origin}: the token must be printable ASCII without spaces")
    return text


def _parse_address(address: str, have_ca: bool) -> tuple[str, bool]:
    """(gRPC target, TLS or not) for a coordinator address."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "http", address
    rest = rest.rstrip("/")
    if scheme not in ("http", "https") or not rest or "/" in rest:
        raise ConfigError(f"coordinator address {address!r} is not http://HOST:PORT or https://HOST:PORT")
    return rest, scheme == "https" or have_ca


__all__ = ["Client", "DEFAULT_ADDRESS", "GantryError"]
