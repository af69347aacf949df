"""Job specs from Python: a dict shaped like the TOML job file, the TOML file itself, or a
:class:`pb.JobSpec` message.

The dict has one entry per table of the job file (``data``, ``model``, ``train``, ``output``,
``job``), each a dict of that table's keys::

    {
        "data": {"url": "/data/celeba64", "condition": "Blond_Hair"},
        "model": {"image_size": 64},
        "train": {"batch_size": 128, "steps": 2000, "device": "cuda"},
        "output": {"url": "s3://bucket/runs/blond"},
        "job": {"name": "blond", "workers": 2},
    }

Tables and keys are the fields of :class:`pb.JobSpec` (read from the generated code, so they
follow ``proto/gantry/v1/gantry.proto``); an unknown one, or a value of the wrong type, raises
:class:`SpecError` naming the key, as ``coordinator submit`` does. A key left out takes the job
file's default on the coordinator, which checks everything else (every problem at once, as
:class:`InvalidArgument`).
"""

from __future__ import annotations

import os
import pathlib
import tomllib
from collections.abc import Mapping
from typing import Any, Union

from google.protobuf.descriptor import FieldDescriptor

from ._stubs import pb
from .errors import SpecError

#: What :meth:`gantry_client.Client.submit` accepts as a job.
SpecLike = Union[Mapping[str, Any], str, os.PathLike, "pb.JobSpec"]

_INTEGERS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOATS = {FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT}


def tables() -> dict[str, list[str]]:
    """Every table of a job spec and its keys, in the proto's order."""
    return {
        table.name: [key.name for key in table.message_type.fields]
        for table in pb.JobSpec.DESCRIPTOR.fields
        if table.message_type is not None
    }


def from_dict(spec: Mapping[str, Any], *, absolute_paths: bool = True) -> pb.JobSpec:
    """A :class:`pb.JobSpec` from a dict shaped like the TOML job file.

    Args:
        spec: ``{"data": {...}, "model": {...}, "train": {...}, "output": {...}, "job": {...}}``;
            tables may be left out.
        absolute_paths: make a relative local ``data.url`` or ``output.url`` absolute against
            the current folder, as ``coordinator submit`` does (the coordinator and workers run
            in other folders). URLs with a scheme and absolute paths are left alone.

    Raises:
        SpecError: an unknown table or key, or a value of the wrong type; the message names it.
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"a job spec is a dict of tables, not {type(spec).__name__}")
    message = pb.JobSpec()
    for table_name, table in spec.items():
        table_field = pb.JobSpec.DESCRIPTOR.fields_by_name.get(str(table_name))
        if table_field is None or table_field.message_type is None:
            raise SpecError(f"unknown table {table_name!r}, expected one of {_names(tables())}")
        if not isinstance(table, Mapping):
            raise SpecError(f"{table_name} must be a table (a dict of keys), not {type(table).__name__}")
        target = getattr(message, table_field.name)
        target.SetInParent()
        for key, value in table.items():
            field = table_field.message_type.fields_by_name.get(str(key))
            if field is None:
                raise SpecError(
                    f"unknown key {table_name}.{key}, expected one of {_names(tables()[table_field.name])}"
                )
            setattr(target, field.name, _checked(f"{table_name}.{key}", field, value))
    if absolute_paths:
        for table in ("data", "output"):
            if message.HasField(table):
                getattr(message, table).url = absolute(getattr(message, table).url)
    return message


def from_toml(path: Union[str, os.PathLike], *, absolute_paths: bool = True) -> pb.JobSpec:
    """A :class:`pb.JobSpec` from a TOML job file (the file ``coordinator submit`` reads).

    Raises:
        OSError: the file cannot be read.
        SpecError: the file is not TOML, or has an unknown table or key or a value of the
            wrong type; the message names the file and the key.
    """
    path = pathlib.Path(path)
    with path.open("rb") as file:
        try:
            data = tomllib.load(file)
        except tomllib.TOMLDecodeError as error:
            raise SpecError(f"job file {path}: {error}") from None
    try:
        return from_dict(data, absolute_paths=absolute_paths)
    except SpecError as error:
        raise SpecError(f"job file {path}: {error.message}") from None


def to_dict(spec: pb.JobSpec) -> dict[str, dict[str, Any]]:
    """A :class:`pb.JobSpec` as a dict shaped like the TOML job file, with the keys that are set
    (a job's spec, as the coordinator answers it, has every default filled in)."""
    out: dict[str, dict[str, Any]] = {}
    for table_field, table in spec.ListFields():
        out[table_field.name] = {field.name: value for field, value in table.ListFields()}
    return out


def to_spec(spec: SpecLike, *, absolute_paths: bool = True) -> pb.JobSpec:
    """A :class:`pb.JobSpec` from any of the forms :meth:`gantry_client.Client.submit` takes.
    A message is used as it is."""
    if isinstance(spec, pb.JobSpec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return from_toml(spec, absolute_paths=absolute_paths)
    if isinstance(spec, Mapping):
        return from_dict(spec, absolute_paths=absolute_paths)
    raise SpecError(
        f"a job spec is a dict, a path to a TOML job file or a gantry_client.pb.JobSpec, not {type(spec).__name__}"
    )


def absolute(url: str) -> str:
    """A relative local path made absolute against the current folder; URLs and absolute paths
    are left alone (``coordinator submit``'s rule)."""
    if not url or "://" in url or os.path.isabs(url):
        return url
    return os.path.join(os.getcwd(), url)


def _checked(key: str, field: FieldDescriptor, value: Any) -> Any:
    """`value` for `field`, or a SpecError naming `key` with what was expected."""
    if _repeated(field) or field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        raise SpecError(f"{key} cannot be set from a job spec dict; build a gantry_client.pb.JobSpec")
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if not isinstance(value, str):
            raise SpecError(f"{key} is {value!r}, expected a string")
        return value
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        if not isinstance(value, bool):
            raise SpecError(f"{key} is {value!r}, expected true or false")
        return value
    if kind in _INTEGERS:
        low, high = _INTEGERS[kind]
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{key} is {value!r}, expected an integer")
        if not low <= value <= high:
            raise SpecError(f"{key} is {value}, expected an integer from {low} to {high}")
        return value
    if kind in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{key} is {value!r}, expected a number")
        return float(value)
    raise SpecError(f"{key} has a type this client cannot set")  # pragma: no cover


def _repeated(field: FieldDescriptor) -> bool:
    # `is_repeated` replaces `label` in newer protobuf releases.
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
    return bool(repeated)


def _names(names) -> str:
    return ", ".join(names)
