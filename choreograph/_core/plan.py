"""
A coordinator's flow, compiled for running: a tree of nodes, and its callbacks in run order.

A step is a leaf (`StepNode`); a `Sequence` is a node whose children run one
after the other. The run loop walks the run order that a sequence flattens
to (`Plan.entries`): one `Entry` per callback, each knowing where its step's
callbacks end, so that a skipped job or a restored step moves on to the next
step in one jump. Node kinds that run children side by side fit in the same
tree; a plan is immutable, so adding a step builds a new one.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._errors import Phase
from .callbacks import Callback
from .fastpath import build_fast_path
from .step import Step


class StepNode:
    """A step as the run loop sees it: a leaf of the plan, its callbacks inspected once."""

    __slots__ = ("callbacks", "compensate", "compensate_failed", "key", "name", "step")

    def __init__(self, step: Step, precheck: Callback | None, job: Callback, compensate: Callback | None) -> None:
        self.step = step
        self.name = step.name
        self.key = step.name.casefold()
        self.callbacks = (job,) if precheck is None else (precheck, job)
        self.compensate = compensate
        self.compensate_failed = step.compensate_failed

    def all_callbacks(self) -> tuple[Callback, ...]:
        """Its precheck, job and compensation, those it has."""
        return self.callbacks if self.compensate is None else (*self.callbacks, self.compensate)


class Sequence:
    """A node whose children run one after the other."""

    __slots__ = ("children",)

    def __init__(self, children: tuple[Node, ...]) -> None:
        self.children = children

    def leaves(self) -> Iterator[StepNode]:
        """Every step under this node, depth first, in declaration order."""
        for child in self.children:
            if isinstance(child, StepNode):
                yield child
            else:
                yield from child.leaves()


#: What a plan's tree is made of.
Node = StepNode | Sequence


class Entry:
    """One callback of the plan, in run order."""

    __slots__ = ("callback", "first", "next_step", "step")

    def __init__(self, callback: Callback, step: StepNode, first: bool, next_step: int) -> None:  # noqa: FBT001
        self.callback, self.step, self.first, self.next_step = callback, step, first, next_step


class Plan:
    """
    A flow compiled for running, and what the run loop needs to know of it up front.

    Attributes:
        root: The tree.
        steps: Its steps, depth first.
        entries: Its callbacks in run order (jobs and prechecks; compensations
            run from `StepNode.compensate`).
        labels: ``(step, phase)`` of each entry.
        names: Step names by case-folded name.
        size: Timestamps a fast run takes (one per entry, plus the start).
        compensates: Whether any step has a compensation.
        has_async: Whether any callback is ``async def``.
        takes_context: Whether any callback takes the context.
        strict_prechecks: A precheck's error (but `Skip`) stops the run.
        fast: The generated fast path (see `choreograph._core.fastpath`).
    """

    __slots__ = (
        "compensates",
        "entries",
        "fast",
        "has_async",
        "labels",
        "names",
        "root",
        "size",
        "steps",
        "strict_prechecks",
        "takes_context",
    )

    def __init__(self, root: Sequence, *, strict_prechecks: bool = False) -> None:
        self.root = root
        self.strict_prechecks = strict_prechecks
        self.steps = tuple(root.leaves())
        entries: list[Entry] = []
        for st in self.steps:
            after = len(entries) + len(st.callbacks)
            entries.extend(Entry(cb, st, index == 0, after) for index, cb in enumerate(st.callbacks))
        self.entries = tuple(entries)
        self.size = len(entries) + 1
        self.labels: tuple[tuple[str, Phase], ...] = tuple((e.step.name, e.callback.role) for e in entries)
        self.names = {st.key: st.name for st in self.steps}
        self.compensates = any(st.compensate is not None for st in self.steps)
        callbacks = [cb for st in self.steps for cb in st.all_callbacks()]
        self.has_async = any(cb.is_async for cb in callbacks)
        self.takes_context = any(cb.takes_context for cb in callbacks)
        self.fast = build_fast_path(self.entries)

    def add(self, step: StepNode) -> Plan:
        """A new plan: this one's steps, then *step*."""
        return Plan(Sequence((*self.root.children, step)), strict_prechecks=self.strict_prechecks)

    @classmethod
    def empty(cls, *, strict_prechecks: bool = False) -> Plan:
        """The plan of a coordinator without steps."""
        return cls(Sequence(()), strict_prechecks=strict_prechecks)
