"""The per-run context handed to callbacks, and the context variable behind it."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from loguru import logger as _logger

from ._bag import DataBag
from ._errors import ChoreographError, NoDataBagInContext, Phase, StepError

if TYPE_CHECKING:  # pragma: no cover - loguru's `Logger` exists only in its stubs,
    # so it cannot be imported at run time; nothing here is checked by beartype.
    from loguru import Logger

InputT = TypeVar("InputT")

_current: ContextVar[Context[Any]] = ContextVar("choreograph_run")


class Context(Generic[InputT]):
    """
    What a callback knows about its run: take it as the first parameter.

    A parameter annotated ``Context`` (or ``Context[Rec]``), or an unannotated
    one named ``ctx`` or ``context``, receives it. Each run has its own
    context, which is also where the coordinator keeps the run's state: its
    attributes are read-only.

    .. versionadded:: 0.1.0
    """

    # The run's state, set by the coordinator. Rarely changed fields have class-level
    # defaults, so that a run sets only what it uses (a run costs microseconds).
    _input: InputT
    _values: Mapping[str, object]
    _bag: DataBag
    _errors: list[StepError]
    _run_id: int
    _step = ""
    _phase: Phase = "job"
    _attempt = 1
    _fatal: ChoreographError | None = None
    _key: str | None = None
    _logger: Logger | None = None
    _logger_step = ""

    def __init__(self) -> None:
        msg = "a Context is made by the coordinator for each run; run the flow to get one"
        raise TypeError(msg)

    @property
    def input(self) -> InputT:
        """The run's input."""
        return self._input

    @property
    def values(self) -> Mapping[str, object]:
        """A read-only snapshot of the ``values=`` passed to the run."""
        return self._values

    @property
    def data_bag(self) -> DataBag:
        """The run's DataBag."""
        return self._bag

    @property
    def errors(self) -> tuple[StepError, ...]:
        """The run's error stack so far, oldest first."""
        return tuple(self._errors)

    @property
    def step(self) -> str:
        """The name of the step whose callback is running."""
        return self._step

    @property
    def phase(self) -> Phase:
        """Which callback of the step is running: precheck, job or compensate."""
        return self._phase

    @property
    def attempt(self) -> int:
        """The attempt number of the running callback, from 1 (see retries)."""
        return self._attempt

    @property
    def fatal(self) -> ChoreographError | None:
        """The run's fatal error while compensations run; else ``None``."""
        return self._fatal

    @property
    def run_id(self) -> int:
        """An identifier of this run, unique within the process."""
        return self._run_id

    @property
    def key(self) -> str | None:
        """The run's idempotency key (durable runs), else ``None``."""
        return self._key

    @property
    def logger(self) -> Logger:
        """A loguru logger bound with ``run_id`` and ``step``."""
        bound = self._logger
        if bound is None or self._logger_step != self._step:
            bound = _logger.bind(run_id=self._run_id, step=self._step)
            self._logger, self._logger_step = bound, self._step
        return bound

    def __repr__(self) -> str:
        return f"<Context run_id={self._run_id} step={self._step!r} phase={self._phase}>"


def get_data_bag() -> DataBag:
    """
    Return the DataBag of the run whose callback is calling.

    Works in plain and ``async def`` callbacks, in whatever thread or task runs
    the callback.

    Raises:
        NoDataBagInContext: Called outside a run.

    .. versionadded:: 0.1.0
    """
    try:
        return _current.get()._bag  # noqa: SLF001 - same package
    except LookupError:
        raise NoDataBagInContext from None
