"""
A coordinator's flow, compiled for running: a tree of nodes, and its callbacks in run order.

A step is a leaf (`StepNode`); a `Sequence` is a node whose children run one
after the other; a `GroupNode` (a `Parallel`) runs its branches, each a
sequence, side by side. The run loop walks the run order that a sequence
flattens to (its *lane*, `lane`): one `Entry` per callback, each knowing
where its step's callbacks end, so that a skipped job or a restored step
moves on to the next step in one jump; a group is one entry of its
sequence's lane, and each of its branches has a lane of its own. A plan is
immutable, so adding a step builds a new one.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._errors import Phase
from .callbacks import Callback
from .fastpath import build_async_fast_path, build_fast_path
from .step import Parallel, Step


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
    """A node whose children (steps and groups) run one after the other."""

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

    def groups(self) -> Iterator[GroupNode]:
        """Every group under this node, depth first."""
        for child in self.children:
            if isinstance(child, GroupNode):
                yield child
                for branch in child.branches:
                    yield from branch.groups()


class GroupNode:
    """
    A `Parallel` as the run loop sees it: its branches side by side, each a sequence.

    Attributes:
        group: The user's `Parallel`.
        name, key: Its name, and case-folded.
        branches: A `Sequence` per branch.
        lanes: Each branch's run order (see `lane`).
        workers: How many plain callbacks of the group may run at once.
        has_async: Whether any callback under it is ``async def`` (then it needs an event loop).
    """

    __slots__ = ("branches", "group", "has_async", "key", "lanes", "name", "workers")

    def __init__(self, group: Parallel, branches: tuple[Sequence, ...]) -> None:
        self.group = group
        self.name = group.name
        self.key = group.name.casefold()
        self.branches = branches
        self.lanes = tuple(lane(branch.children) for branch in branches)
        self.workers = group.max_workers or len(branches)
        self.has_async = any(cb.is_async for st in self.leaves() for cb in st.all_callbacks())

    def leaves(self) -> Iterator[StepNode]:
        """Every step under this group, depth first, in declaration order."""
        for branch in self.branches:
            yield from branch.leaves()


#: What a sequence is made of.
Node = StepNode | GroupNode


class Entry:
    """
    One callback of a lane, in run order; or a group, which is one entry of its lane.

    A group's entry has only `group` (reading another of its fields raises
    `AttributeError`): the run loop looks at `group` first, and goes on with
    the next entry once the group ended.
    """

    __slots__ = ("callback", "first", "group", "next_step", "step")

    def __init__(self, callback: Callback, step: StepNode, first: bool, next_step: int) -> None:  # noqa: FBT001
        self.callback, self.step, self.first, self.next_step = callback, step, first, next_step
        self.group: GroupNode | None = None

    @classmethod
    def of_group(cls, group: GroupNode) -> Entry:
        """The entry of a group in its lane."""
        entry: Entry = object.__new__(cls)
        entry.group = group
        return entry


def lane(children: tuple[Node, ...]) -> tuple[Entry, ...]:
    """The run order of a sequence's children: their callbacks, and an entry per group."""
    entries: list[Entry] = []
    for child in children:
        if isinstance(child, StepNode):
            after = len(entries) + len(child.callbacks)
            entries.extend(Entry(cb, child, index == 0, after) for index, cb in enumerate(child.callbacks))
        else:
            entries.append(Entry.of_group(child))
    return tuple(entries)


class Plan:
    """
    A flow compiled for running, and what the run loop needs to know of it up front.

    Attributes:
        root: The tree.
        steps: Its steps, depth first.
        entries: The root's lane: its callbacks in run order (jobs and
            prechecks; compensations run from `StepNode.compensate`), a
            group as one entry.
        labels: ``(step, phase)`` of each entry (a group's name for a group's entry).
        names: Step names by case-folded name.
        taken: Step and group names by case-folded name (they share one namespace).
        size: Timestamps a fast run takes (one per entry, plus the start).
        compensates: Whether any step has a compensation.
        has_async: Whether any callback is ``async def``.
        takes_context: Whether any callback takes the context.
        strict_prechecks: A precheck's error (but `Skip`) stops the run.
        fast: The generated fast path (see `choreograph._core.fastpath`).
        fast_async: Its ``async def`` twin, which awaits ``async def`` callbacks; ``None`` when the plan has none.
    """

    __slots__ = (
        "compensates",
        "entries",
        "fast",
        "fast_async",
        "has_async",
        "labels",
        "names",
        "root",
        "size",
        "steps",
        "strict_prechecks",
        "taken",
        "takes_context",
    )

    def __init__(self, root: Sequence, *, strict_prechecks: bool = False) -> None:
        self.root = root
        self.strict_prechecks = strict_prechecks
        self.steps = tuple(root.leaves())
        self.entries = entries = lane(root.children)
        self.size = len(entries) + 1
        self.labels: tuple[tuple[str, Phase], ...] = tuple(
            (e.group.name, "job")  # pragma: no mutate - never read: the fast path stops at a group
            if e.group is not None
            else (e.step.name, e.callback.role)
            for e in entries
        )
        self.names = {st.key: st.name for st in self.steps}
        groups = tuple(root.groups())
        self.taken = {**self.names, **{group.key: group.name for group in groups}}
        self.compensates = any(st.compensate is not None for st in self.steps)
        callbacks = [cb for st in self.steps for cb in st.all_callbacks()]
        self.has_async = any(cb.is_async for cb in callbacks)
        self.takes_context = any(cb.takes_context for cb in callbacks)
        self.fast = build_fast_path(self.entries)
        self.fast_async = build_async_fast_path(self.entries) if self.has_async else None

    def add(self, step: StepNode | GroupNode) -> Plan:
        """A new plan: this one's nodes, then *step* (a step or a group)."""
        return Plan(Sequence((*self.root.children, step)), strict_prechecks=self.strict_prechecks)

    @classmethod
    def empty(cls, *, strict_prechecks: bool = False) -> Plan:
        """The plan of a coordinator without steps."""
        return cls(Sequence(()), strict_prechecks=strict_prechecks)
