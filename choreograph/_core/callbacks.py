"""The one-time inspection of a step's callbacks: how to call each, and how to check its input and output."""

from __future__ import annotations

import builtins
import functools
import inspect
import math
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from types import NoneType
from typing import Any, Final, ForwardRef, Literal, Protocol, get_args, get_origin

from beartype.door import is_bearable
from beartype.roar import BeartypeException
from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success
from returns.unsafe import unsafe_perform_io

from .._errors import CallbackFailure, StepDefinitionError, UnassignableOutput
from .context import Context
from .generics import accepts, is_known
from .retry import RetryPolicy

Role = Literal["precheck", "job", "compensate"]

#: Containers whose return is unwrapped: Success -> output, Failure -> error.
CONTAINERS: Final = frozenset({Success, Failure, IOSuccess, IOFailure})

_CONTEXT_NAMES: Final = frozenset({"ctx", "context"})
_CONTEXT_STRINGS: Final = frozenset({"Context", "choreograph.Context", "EntityContext", "choreograph.EntityContext"})
_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
#: Return annotations of a callback that never returns: it always raises.
_NEVER: Final = (typing.NoReturn, typing.Never)


class _Checker(Protocol):
    def __call__(self, value: object, /) -> bool: ...


@dataclass(frozen=True, slots=True)
class Callback:
    """A callback, inspected once: how to call it and how to check it."""

    fn: Callable[..., object]
    role: Role
    #: Index of the DataBag table its output goes to: 0 precheck, 1 job.
    is_job: bool
    #: Calls `fn` with `(context, input)`, passing only what it takes.
    call: Callable[[object, object], object]
    is_async: bool
    takes_context: bool
    takes_input: bool
    check_input: _Checker | None
    #: The input annotation when it is a plain class (checked with isinstance).
    input_class: type | None
    input_hint: str
    has_output: bool
    #: True for an acceptable output that is not a container; None: unannotated.
    check_output: _Checker | None
    #: The output annotation when it is a plain class (checked with isinstance).
    output_class: type | None
    output_hint: str
    retry: RetryPolicy | None
    timeout: float | None

    def settle(self, step: str, value: object) -> tuple[object, BaseException | None]:
        """
        Unwrap a `returns` container and check *value*: ``(output, error)``.

        The coordinator calls this only when its fast check did not accept the value.
        """
        value, error = unwrap(value)
        if error is not None:
            return None, error
        check = self.check_output
        if not self.has_output or check is None or check(value):
            return value, None
        return None, UnassignableOutput(step, self.role, self.output_hint, type_name(value))


def unwrap(value: object) -> tuple[object, BaseException | None]:
    """
    Unwrap a `returns` container: ``(output, None)`` for a success, ``(None, error)`` for a failure.

    Anything else is returned as it is.

    >>> from returns.result import Failure, Success
    >>> unwrap(Success(1)), unwrap(Failure("no")), unwrap(2)
    ((1, None), (None, CallbackFailure('no')), (2, None))
    """
    kind = type(value)
    if kind not in CONTAINERS:
        return value, None
    if kind is Success:
        return value.unwrap(), None  # type: ignore[attr-defined]
    if kind is IOSuccess:
        return unsafe_perform_io(value.unwrap()), None  # type: ignore[attr-defined]
    failed = value.failure()  # type: ignore[attr-defined]
    if kind is IOFailure:
        failed = unsafe_perform_io(failed)
    return None, failed if isinstance(failed, Exception) else CallbackFailure(failed)


def type_name(value: object) -> str:
    """
    Name *value*'s type for messages.

    >>> type_name(3), type_name(None)
    ('int', 'None')
    """
    if value is None:
        return "None"
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def hint_name(hint: object) -> str:
    """
    Name an annotation for messages.

    >>> hint_name(int), hint_name(list[int]), hint_name(None)
    ('int', 'list[int]', 'None')
    """
    if hint is None or hint is NoneType:
        return "None"
    if isinstance(hint, type) and not get_args(hint):  # pragma: no mutate - a class has no type arguments (3.11+)
        if hint.__module__ == "builtins":
            return hint.__qualname__
        return f"{hint.__module__}.{hint.__qualname__}"
    return repr(hint).replace("typing.", "")


def _is_context(hint: object) -> bool:
    """Whether *hint* annotates a context: `Context`, a subclass (`EntityContext`), or one parametrized."""
    origin = get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, Context):
        return True
    return isinstance(hint, str) and hint.partition("[")[0].strip() in _CONTEXT_STRINGS


def _globals_of(fn: object) -> dict[str, Any]:
    target = inspect.unwrap(fn)  # type: ignore[arg-type]
    while isinstance(target, functools.partial):
        target = inspect.unwrap(target.func)
    if isinstance(target, type):  # a class used as a callback: its module's
        module = sys.modules.get(target.__module__)
        return vars(module) if module is not None else {}
    target = getattr(target, "__func__", target)
    if not inspect.isfunction(target) and not inspect.isbuiltin(target):  # pragma: no mutate - builtins: no __globals__
        target = type(target).__call__ if callable(target) else target
        target = getattr(target, "__func__", target)  # pragma: no mutate - a method forwards __globals__ to __func__
    return getattr(target, "__globals__", {})


def _signature(step: str, role: Role, fn: Callable[..., object], made: type | None = None) -> inspect.Signature:
    """Return *fn*'s signature with every annotation resolved, or raise; *made*: the class *fn* instantiates."""
    if made is not None and get_origin(fn) is not None:  # `Box[int]`: its call forwards to `Box`
        fn = made
    try:
        raw = inspect.signature(fn)
    except (ValueError, TypeError) as exc:
        raise StepDefinitionError(step, role, f"cannot read its signature ({exc})") from exc
    if made is not None:  # it returns an instance, whatever `__init__` or `__new__` say
        raw = raw.replace(return_annotation=made)  # pragma: no mutate - replaced again below
    try:
        sig = inspect.signature(fn, eval_str=True)
    except Exception:  # noqa: BLE001 - resolve one annotation at a time, to name the culprit
        sig = raw
    if made is not None:
        sig = sig.replace(return_annotation=made)
    hints = [p.annotation for p in sig.parameters.values()] + [sig.return_annotation]
    if not any(isinstance(hint, str | ForwardRef) for hint in hints):
        return sig
    namespace = dict(vars(builtins)) | {"Context": Context} | _globals_of(fn)
    params = [
        param.replace(annotation=_resolve(step, role, param.name, param.annotation, namespace))
        for param in sig.parameters.values()
    ]
    ret = _resolve(step, role, "return", sig.return_annotation, namespace)
    return sig.replace(parameters=params, return_annotation=ret)


def _resolve(step: str, role: Role, where: str, hint: object, namespace: dict[str, Any]) -> object:
    """Evaluate a string annotation (again while it gives a string, as ``x: "'int'"`` does), as typing does."""
    original, seen = hint, set()
    while True:
        if isinstance(hint, ForwardRef):
            hint = hint.__forward_arg__
        if not isinstance(hint, str):
            return hint
        if _is_context(hint) and "[" not in hint:
            return Context
        what = "return annotation" if where == "return" else f"annotation of {where!r}"
        if hint in seen:
            problem = f"cannot resolve the {what}: {original!r} names itself again ({hint!r})"
            raise StepDefinitionError(step, role, problem)
        seen.add(hint)
        try:
            hint = eval(hint, namespace)  # noqa: S307 - what typing.get_type_hints does
        except Exception as exc:
            problem = f"cannot resolve the {what}: {hint!r} ({type(exc).__name__}: {exc})"
            raise StepDefinitionError(step, role, problem) from exc


def _compile_check(step: str, role: Role, what: str, hint: object) -> _Checker | None:
    """Return a fast checker for *hint*, or None when anything goes."""
    if hint is Any or hint is object or hint is inspect.Parameter.empty:
        return None
    if hint is None:
        hint = NoneType  # pragma: no mutate - beartype reads None as NoneType
    if (
        isinstance(hint, type)
        and not get_args(hint)  # pragma: no mutate - `hint` is a class: no type arguments (3.11+)
        and not getattr(hint, "_is_protocol", False)  # pragma: no mutate - not None is not False
        and not typing.is_typeddict(hint)
    ):
        # Bound through the metaclass: `hint.__instancecheck__` would be unbound for `type` itself.
        return type(hint).__instancecheck__.__get__(hint)  # type: ignore[no-any-return]
    any_hint: Any = hint  # whatever the annotation is, beartype judges it
    try:
        is_bearable(None, any_hint)
    except BeartypeException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problem = f"beartype cannot check the {what} annotation {hint_name(hint)} ({reason})"
        raise StepDefinitionError(step, role, problem) from exc
    return functools.partial(is_bearable, hint=any_hint)


def _plain_class(check: _Checker | None) -> type | None:
    """The class whose ``__instancecheck__`` *check* is, if it is one."""
    owner = getattr(check, "__self__", None)
    # pragma: no mutate start - only a bound __instancecheck__ has a class as __self__
    return owner if isinstance(owner, type) and getattr(check, "__name__", "") == "__instancecheck__" else None
    # pragma: no mutate end


def _output_hint(hint: object) -> object:
    """For ``Result[T, E]`` and ``IOResult[T, E]`` the output is checked against ``T``."""
    origin = get_origin(hint)
    if isinstance(origin, type) and issubclass(origin, Result | IOResult):
        return get_args(hint)[0]
    if isinstance(hint, type) and issubclass(hint, Result | IOResult):
        return Any
    return hint


def _caller(fn: Callable[..., Any], takes_context: bool, takes_input: bool) -> Callable[[object, object], object]:  # noqa: FBT001
    if takes_context and takes_input:
        return fn
    if takes_context:
        return lambda context, _input: fn(context)
    if takes_input:
        return lambda _context, value: fn(value)
    return lambda _context, _input: fn()


def _callee(fn: object) -> object:
    """
    The function whose body calling *fn* runs, or the class it instantiates.

    Partials, bound methods and ``staticmethod`` objects are unwrapped, a
    callable instance gives its class's ``__call__``; decorators are not
    looked through (``__wrapped__``: a wrapper may change what is returned).
    """
    while True:  # a partial of a bound method of a callable instance...
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, staticmethod) or inspect.ismethod(fn):
            fn = fn.__func__
        elif not isinstance(fn, type) and not inspect.isroutine(fn) and callable(fn):
            fn = type(fn).__call__
        else:
            break
    return fn


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(_callee(fn))


def _made_class(fn: object) -> type | None:
    """The class whose instance calling *fn* returns: *fn* (or the function of a partial) is that class."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    origin = get_origin(fn)  # a parametrized generic class, `Box[int]`
    made = origin if isinstance(origin, type) else fn
    return made if isinstance(made, type) else None


def _never(value: object, /) -> bool:
    """The output check of a callback annotated ``-> NoReturn``: whatever it returned, it should not have."""
    del value
    return False


def compile_callback(
    step: str,
    role: Role,
    fn: object,
    *,
    retry: RetryPolicy | None,
    timeout: float | None,
    input_type: object = object,
) -> Callback:
    """
    Inspect *fn* once: its call form, its checks, whether it is async.

    Args:
        step: The step's name, for errors.
        role: Which callback of the step *fn* is.
        fn: The callback.
        retry: The step's retry policy.
        timeout: The step's timeout.
        input_type: The coordinator's input type (``Coordinator[Rec]``), which a
            ``Context[X]`` parameter must accept; `object` when not declared.

    Raises:
        StepDefinitionError: *fn* can't be used as a callback.
    """
    if not callable(fn):
        hint = ""
        if isinstance(fn, classmethod):
            hint = " (a classmethod object: pass Class.method)"
        elif inspect.iscoroutine(fn) or inspect.isgenerator(fn):
            hint = " (the result of a call: pass the function itself)"
        raise StepDefinitionError(step, role, f"must be callable, got {type_name(fn)}{hint}")
    callee = _callee(fn)
    if inspect.isgeneratorfunction(callee) or inspect.isasyncgenfunction(callee):
        kind = "an async generator" if inspect.isasyncgenfunction(callee) else "a generator"
        problem = (
            f"is {kind} function (it yields): calling it only makes {kind}, without running its body;"
            " return the values instead (a list, say)"
        )
        raise StepDefinitionError(step, role, problem)
    if isinstance(fn, staticmethod):  # `Step("load", load)` in the class body that defines `load`
        fn = fn.__func__
    made = _made_class(fn)
    sig = _signature(step, role, fn, made)
    context_param, input_param = _parameters(step, role, sig)
    takes_context = context_param is not None
    if context_param is not None and is_known(input_type):  # pragma: no mutate - accepts() takes unknown inputs
        _check_context(step, role, context_param, input_type)
    input_hint = input_param.annotation if input_param is not None else inspect.Parameter.empty
    for name, hint in [("input", input_hint), ("return", sig.return_annotation)]:
        if isinstance(hint, str):  # pragma: no cover - _signature resolved every string
            raise StepDefinitionError(step, role, f"unresolved {name} annotation {hint!r}")

    ret = sig.return_annotation
    has_output = ret is not None and ret is not NoneType
    out_hint = _output_hint(ret) if has_output else Any  # pragma: no mutate - an output-less callback is never checked
    # pragma: no mutate start - _compile_check(..., Parameter.empty) is None too
    check_input = _compile_check(step, role, "input", input_hint) if input_param is not None else None
    # pragma: no mutate end
    check_output = _never if out_hint in _NEVER else _compile_check(step, role, "return", out_hint)
    return Callback(
        fn=fn,
        role=role,
        is_job=role == "job",
        call=_caller(fn, takes_context, input_param is not None),
        is_async=_is_async(fn),
        takes_context=takes_context,
        takes_input=input_param is not None,
        check_input=check_input,
        input_class=_plain_class(check_input),
        input_hint=hint_name(input_hint),
        has_output=has_output,
        check_output=check_output,
        output_class=_plain_class(check_output),
        output_hint=hint_name(out_hint),
        retry=retry if role != "precheck" or (retry is not None and retry.prechecks) else None,
        timeout=timeout,
    )


def _parameters(
    step: str, role: Role, sig: inspect.Signature
) -> tuple[inspect.Parameter | None, inspect.Parameter | None]:
    """Return a callback's context parameter and input parameter (each None when absent), or raise."""
    positional = _positional(step, role, sig)

    def is_context(param: inspect.Parameter) -> bool:
        if param.annotation is inspect.Parameter.empty:
            return param.name in _CONTEXT_NAMES
        return _is_context(param.annotation)

    context = positional[0] if positional and is_context(positional[0]) else None
    rest = positional[1:] if context is not None else positional
    for index, param in enumerate(rest):
        if is_context(param):
            problem = f"the context parameter {param.name!r} must be the first parameter"
            raise StepDefinitionError(step, role, problem)
        if index and param.default is inspect.Parameter.empty:
            names = ", ".join(repr(p.name) for p in rest if p.default is inspect.Parameter.empty)
            problem = f"takes more than one input parameter ({names}); extra parameters need defaults"
            if rest[0].name in {"self", "cls"}:
                problem += f" (a method taken from its class? {rest[0].name!r} is not passed: use a bound method)"
            raise StepDefinitionError(step, role, problem)
    return context, rest[0] if rest else None


def _positional(step: str, role: Role, sig: inspect.Signature) -> list[inspect.Parameter]:
    """Return the positional parameters of a signature, or raise for `*args`, `**kwargs` and required keywords."""
    positional: list[inspect.Parameter] = []
    for param in sig.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            problem = f"*{param.name} is not allowed (a callback is passed the context and the input, those it names)"
            raise StepDefinitionError(step, role, problem)
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            raise StepDefinitionError(step, role, f"**{param.name} is not allowed")
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            if param.default is inspect.Parameter.empty:
                problem = f"keyword-only parameter {param.name!r} needs a default (it is never passed)"
                raise StepDefinitionError(step, role, problem)
            continue
        positional.append(param)
    return positional


def _check_context(step: str, role: Role, param: inspect.Parameter, input_type: object) -> None:
    """Refuse a ``Context[X]`` parameter whose ``X`` does not accept the coordinator's input type."""
    if get_origin(param.annotation) is not Context:  # a subclass's argument is its own (`EntityContext[State]`)
        return
    args = get_args(param.annotation)
    if not accepts(args[0], input_type):
        problem = (
            f"its context parameter {param.name!r} is annotated Context[{hint_name(args[0])}],"
            f" but the coordinator's input is {hint_name(input_type)}"
        )
        raise StepDefinitionError(step, role, problem)


def validate_timeout(timeout: object, what: str) -> float | None:
    """
    Check a timeout in seconds: ``None`` or a number >= 0.

    >>> validate_timeout(1, "timeout")
    1.0
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        msg = f"{what} must be a number of seconds or None, got {type_name(timeout)}"
        raise TypeError(msg)
    if math.isnan(timeout) or timeout < 0:
        msg = f"{what} must be >= 0, got {timeout!r}"
        raise ValueError(msg)
    return float(timeout)
