"""Errors raised by jupycron. Callers catch :class:`JupycronError`; the tree is::

    JupycronError
    ├── ConfigError          bad option / env / TOML value (``setting`` names it)
    ├── SpecError            an invalid ``# jupycron:`` line (makes the notebook disabled)
    ├── NotebookNotFound     run-now of a path that is not an autorun notebook
    ├── AlreadyRunning       the notebook's lock is held by another live run
    ├── HistoryError         the history file cannot be read or written
    │   └── RunNotRecorded   a finished run whose outcome could not be written (``.run``)
    └── DeliveryError        an alert channel did not take a message (``channel``, ``permanent``)

Run outcomes (failed, timeout, oom, crashed, interrupted) are *not* exceptions: they are
values of :class:`jupycron.models.RunStatus` recorded in the history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Run


class JupycronError(Exception):
    """Base class of every jupycron error."""


class ConfigError(JupycronError):
    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class SpecError(JupycronError):
    """The ``# jupycron:`` line is invalid; the message is shown on the summary as the reason."""


class NotebookNotFound(JupycronError):
    pass


class AlreadyRunning(JupycronError):
    pass


class HistoryError(JupycronError):
    pass


class RunNotRecorded(HistoryError):
    """A run finished but its outcome could not be written; ``run`` holds it (the caller
    keeps it and retries, see :class:`jupycron.recording.PendingOutcomes`)."""

    def __init__(self, run: Run, cause: BaseException) -> None:
        super().__init__(f"the outcome of run {run.run_id} of {run.notebook} could not be "
                         f"written to the history: {cause}")
        self.run = run


class DeliveryError(JupycronError):
    """An alert channel did not take a message (raised by the injected senders, see
    :mod:`jupycron.senders`). ``permanent``: retrying cannot help (bad config, 4xx)."""

    def __init__(self, message: str, channel: str = "", permanent: bool = False) -> None:
        super().__init__(message)
        self.channel = channel
        self.permanent = permanent
