"""Job states by name: ``QUEUED``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``CANCELLED``, as the
CLI prints them."""

from __future__ import annotations

from typing import Union

from ._stubs import pb

#: The states a job ends in.
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

_PREFIX = "JOB_STATE_"


def state_name(state: int) -> str:
    """The name of a :class:`pb.JobState` value without its prefix (``"RUNNING"``); an unknown
    value reads ``"UNKNOWN(<n>)"`` (a newer coordinator's state)."""
    try:
        return pb.JobState.Name(state).removeprefix(_PREFIX)
    except ValueError:
        return f"UNKNOWN({state})"


def state_value(state: Union[str, int]) -> int:
    """A :class:`pb.JobState` value from a name in any case, with or without ``JOB_STATE_``
    (``"running"``, ``"RUNNING"``, ``"JOB_STATE_RUNNING"``) or from the value itself.

    Raises:
        ValueError: the name is not a job state.
    """
    if isinstance(state, bool):
        raise ValueError(f"{state!r} is not a job state")
    if isinstance(state, int):
        return state
    name = str(state).strip().upper()
    if not name.startswith(_PREFIX):
        name = _PREFIX + name
    try:
        return pb.JobState.Value(name)
    except ValueError:
        known = ", ".join(n.removeprefix(_PREFIX).lower() for n in pb.JobState.keys() if not n.endswith("UNSPECIFIED"))
        raise ValueError(f"{state!r} is not a job state (expected one of {known})") from None


def is_final(state: int) -> bool:
    """Whether a job in this state has ended."""
    return state_name(state) in FINAL_STATES
