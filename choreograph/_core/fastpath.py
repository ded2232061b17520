"""
A plan's fast path: one generated function that runs the plan's callbacks while they succeed.

Most runs of most flows are all successes. For them, the general run loop's
bookkeeping (a trace tuple per callback, retry and timeout handling, outcome
classification) costs several times the callbacks themselves. So each plan gets
a straight-line function, generated once when a step is added, like the
``__init__`` that `dataclasses` writes: every callback is called with its own
argument form, every check is a single ``isinstance`` or checker call, every
output goes straight into the DataBag, and the trace is kept as one timestamp
per callback.

The fast path decides nothing but success. At the first callback it does not
handle (one with a timeout; an ``async def`` callback, on the plain fast path)
it stops *before* calling it; at the first callback that raises, returns a
``returns`` container or an output its fast check refuses, it stops *after*
calling it and leaves the result in ``run.pending``. Either way it returns that callback's index, and
`choreograph._core.loop.hand_over` continues the run from there with the general
loop, which decides every outcome. It returns ``-1`` when every callback
succeeded.

The fast path does not set the context's step and phase: while a run is on
it, they are read off the timestamps taken so far (see `choreograph._core.state.RunState.fast_label`).

A plan with ``async def`` callbacks also gets an ``async def`` fast path, for
runs inside an event loop (`choreograph._core.runs.run_async`): the same code,
which awaits those callbacks where the plain one stops before them.

Plain-class input checks are made once per run and class, at the first
callback that needs them: the input is the same object throughout the run,
and its class cannot change, so a later check of the same class could only
repeat the first one's answer. Other checks (generic aliases, protocols...) are
made before every callback, as the input's contents may have changed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .callbacks import CONTAINERS, Callback

#: (context, run, input, precheck table, job table, stamps) -> index where it stopped, or -1.
#: ``stamps[0]`` is set by the caller; callback ``i`` sets ``stamps[i + 1]`` (``perf_counter_ns``).
FastPath = Callable[[object, object, object, dict[str, object], dict[str, object], list[int]], int]
#: The same, as a coroutine function: it awaits ``async def`` callbacks.
AsyncFastPath = Callable[[object, object, object, dict[str, object], dict[str, object], list[int]], Awaitable[int]]


class _Entry(Protocol):
    callback: Callback
    first: bool

    @property
    def group(self) -> object: ...
    @property
    def step(self) -> _Step: ...


class _Step(Protocol):
    name: str
    key: str


def build_fast_path(entries: Sequence[_Entry]) -> FastPath:
    """
    Generate the fast path of a plan (see the module's docstring).

    >>> build_fast_path([])(None, None, None, {}, {}, [0])
    -1
    """
    return _build(entries, awaits=False)  # type: ignore[return-value]


def build_async_fast_path(entries: Sequence[_Entry]) -> AsyncFastPath:
    """
    Generate the ``async def`` fast path of a plan, which awaits ``async def`` callbacks (see the module's docstring).

    >>> import asyncio
    >>> asyncio.run(build_async_fast_path([])(None, None, None, {}, {}, [0]))
    -1
    """
    return _build(entries, awaits=True)  # type: ignore[return-value]


def _build(entries: Sequence[_Entry], *, awaits: bool) -> object:
    namespace: dict[str, object] = {"CONTAINERS": CONTAINERS, "clock": time.perf_counter_ns, "isinstance": isinstance}
    lines = [f"{'async def' if awaits else 'def'} fast_path(ctx, run, value, pt, jt, stamps):"]
    checked: set[type] = set()
    for index, entry in enumerate(entries):
        if entry.group is not None:  # a group: the general loop runs it
            lines.append(f"    return {index}")
            break
        cb = entry.callback
        if (cb.is_async and not awaits) or cb.timeout is not None:
            lines.append(f"    return {index}")
            break
        if cb.input_class is not None:
            if cb.input_class not in checked:
                checked.add(cb.input_class)
                namespace[f"I{index}"] = cb.input_class
                lines.append(f"    if not isinstance(value, I{index}): return {index}")
        elif cb.check_input is not None:
            namespace[f"I{index}"] = cb.check_input
            lines.append(f"    if not I{index}(value): return {index}")
        namespace[f"F{index}"] = cb.fn
        args = ", ".join(name for name, takes in (("ctx", cb.takes_context), ("value", cb.takes_input)) if takes)
        lines += [
            "    try:",
            f"        out = {'await ' if cb.is_async else ''}F{index}({args})",
            "    except Exception as exc:",
            "        run.pending = (None, exc)",
            f"        return {index}",
        ]
        if cb.has_output and cb.output_class is not None:
            namespace[f"O{index}"] = cb.output_class
            # The exact class first: an attribute read, cheaper than a call.
            test = f"out.__class__ is not O{index} and not isinstance(out, O{index})"
        elif cb.has_output and cb.check_output is not None:
            namespace[f"O{index}"] = cb.check_output
            test = f"not O{index}(out)"
        else:
            test = "out.__class__ in CONTAINERS"
        lines += [f"    if {test}:", "        run.pending = (out, None)", f"        return {index}"]
        if cb.has_output:
            lines.append(f"    {'jt' if cb.is_job else 'pt'}[{entry.step.key!r}] = out")
        lines.append(f"    stamps[{index + 1}] = clock()")
    else:
        lines.append("    return -1")
    # Everything the function uses is a closure variable of a factory: a cell
    # read is cheaper than a global (or builtin) lookup.
    source = "\n".join(
        [f"def make_fast_path({', '.join(namespace)}):", *(f"    {line}" for line in lines), "    return fast_path"]
    )
    scope: dict[str, object] = {}
    exec(compile(source, "<choreograph fast path>", "exec"), scope)  # noqa: S102 - built from names and repr()s
    return scope["make_fast_path"](**namespace)  # type: ignore[operator]
