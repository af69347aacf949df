"""What :meth:`gantry_client.Client.watch` yields: one object per event of the job's stream.

- :class:`JobUpdate`: the job's record changed (its state, reason or attempts); the first event
  of every watch is one, with the job as it is.
- :class:`Step`: a training step completed, with its losses, timings and (on the steps where the
  job evaluated its generator, ``train.eval_every``) the evaluation.
- :class:`Checkpoint`: a checkpoint was committed to storage.
- :class:`End`: the job reached a final state; always the last event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ._stubs import pb
from .states import state_name


@dataclass(frozen=True)
class JobUpdate:
    """The job's record changed.

    Attributes:
        job: the job as it is now (:class:`pb.Job`).
        state: its state's name (``"RUNNING"``).
        reason: why it is in that state.
        previous_state: the state's name at the previous update of this watch; ``None`` for the
            first event.
        previous_reason: the reason at the previous update; ``None`` for the first event.
    """

    job: pb.Job = field(repr=False)
    state: str
    reason: str
    previous_state: Optional[str] = None
    previous_reason: Optional[str] = None

    @property
    def state_changed(self) -> bool:
        """Whether the state differs from the previous update (always true for the first)."""
        return self.state != self.previous_state

    @property
    def changed(self) -> bool:
        """Whether the state or the reason differs from the previous update (what
        ``coordinator watch`` prints a line for); false when only the attempts changed."""
        return self.state_changed or self.reason != self.previous_reason


@dataclass(frozen=True)
class Step:
    """A generator step completed (the losses of :class:`pb.StepMetrics`).

    When a watcher falls behind, the coordinator skips steps rather than stall: ``step`` grows
    but may jump.
    """

    step: int
    epoch: int
    c_loss: float
    c_wass_loss: float
    c_gp: float
    g_loss: float
    images_per_sec: float
    step_seconds: float = 0.0
    loader_wait_seconds: float = 0.0
    collective_seconds: float = 0.0
    #: :class:`pb.Evaluation` (accuracy, classifier_accuracy, label_swap, frechet, per-class
    #: ``classes``, ``url`` of the report) on evaluated steps, else ``None``.
    evaluation: Optional[pb.Evaluation] = field(default=None, repr=False)

    @classmethod
    def from_pb(cls, m: pb.StepMetrics) -> "Step":
        """From the message."""
        return cls(
            m.step,
            m.epoch,
            m.c_loss,
            m.c_wass_loss,
            m.c_gp,
            m.g_loss,
            m.images_per_sec,
            m.step_seconds,
            m.loader_wait_seconds,
            m.collective_seconds,
            m.evaluation if m.HasField("evaluation") else None,
        )


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint was committed: ``url`` is its folder (``<output>/checkpoints/step-NNNNNNN``)."""

    step: int
    url: str


@dataclass(frozen=True)
class End:
    """The job ended; the last event of a watch.

    Attributes:
        job: the final job (:class:`pb.Job`).
        state: ``"SUCCEEDED"``, ``"FAILED"`` or ``"CANCELLED"``.
        reason: why (``"trained to step 2000"``, the failure, the cancel's reason).
    """

    job: pb.Job = field(repr=False)
    state: str
    reason: str

    @property
    def succeeded(self) -> bool:
        """Whether the job SUCCEEDED."""
        return self.state == "SUCCEEDED"


#: Any event of a watch.
Event = Union[JobUpdate, Step, Checkpoint, End]


def job_update(job: pb.Job, previous: Optional[pb.Job]) -> JobUpdate:
    """The update for a new record of the job, given the one before it (if any)."""
    return JobUpdate(
        job=job,
        state=state_name(job.state),
        reason=job.reason,
        previous_state=None if previous is None else state_name(previous.state),
        previous_reason=None if previous is None else previous.reason,
    )


def end(job: pb.Job) -> End:
    """The end of a watch on a job in a final state."""
    return End(job=job, state=state_name(job.state), reason=job.reason)
