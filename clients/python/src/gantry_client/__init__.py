"""gantry_client: submit, follow and manage gantry training jobs from Python.

A thin, typed layer over gantry's job API (``gantry.v1.JobService`` in
``proto/gantry/v1/gantry.proto``), whose stubs are generated when the package is built:

- :class:`Client`: ``submit`` (a dict shaped like the TOML job file, a TOML file, or a
  :class:`pb.JobSpec`), ``get``, ``list``, ``cancel``, ``watch`` (an iterator of events) and
  ``wait``; a context manager that closes its channel.
- :mod:`gantry_client.events`: :class:`JobUpdate`, :class:`Step`, :class:`Checkpoint`,
  :class:`End`, what ``watch`` yields.
- :mod:`gantry_client.errors`: :class:`GantryError` and one subclass per gRPC code
  (:class:`NotFound`, :class:`InvalidArgument`, :class:`Unauthenticated`, ...), keeping the
  coordinator's message and code.
- :mod:`gantry_client.spec`: job specs from dicts and TOML files, and back.
- ``pb`` and ``pb_grpc``: the generated messages and stubs.

Example::

    import gantry_client

    with gantry_client.Client("http://coord:50051", token_file="job.token") as client:
        job = client.submit({
            "data": {"url": "/data/celeba64", "condition": "Blond_Hair"},
            "train": {"steps": 2000, "device": "cuda"},
            "output": {"url": "s3://bucket/runs/blond"},
        })
        final = client.wait(job.id, on_event=print)
        print(gantry_client.state_name(final.state), final.reason)
"""

from ._stubs import pb, pb_grpc
from .client import DEFAULT_ADDRESS, Client
from .errors import (
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    GantryError,
    Internal,
    InvalidArgument,
    JobNotSucceeded,
    NotFound,
    PermissionDenied,
    SpecError,
    Unauthenticated,
    Unavailable,
)
from .events import Checkpoint, End, Event, JobUpdate, Step
from .spec import from_dict as spec_from_dict
from .spec import from_toml as spec_from_toml
from .spec import to_dict as spec_to_dict
from .states import FINAL_STATES, is_final, state_name, state_value

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "Client",
    "ConfigError",
    "DEFAULT_ADDRESS",
    "DeadlineExceeded",
    "End",
    "Event",
    "FINAL_STATES",
    "FailedPrecondition",
    "GantryError",
    "Internal",
    "InvalidArgument",
    "JobNotSucceeded",
    "JobUpdate",
    "NotFound",
    "PermissionDenied",
    "SpecError",
    "Step",
    "Unauthenticated",
    "Unavailable",
    "is_final",
    "pb",
    "pb_grpc",
    "spec_from_dict",
    "spec_from_toml",
    "spec_to_dict",
    "state_name",
    "state_value",
]
