"""
Flows as data: read a spec into a `Coordinator` (`load`), and write a coordinator's flow as one (`dump`).

A spec is a mapping, or a ``.json`` or ``.toml`` file holding one::

    {"choreograph": 1, "input": "shop.models:Order", "strict_prechecks": false,
     "steps": [{"step": "validate", "job": "shop.steps:validate"},
               {"parallel": "checks", "max_workers": 2,
                "branches": [[{"step": "credit", "job": "shop.steps:credit"}]]}]}

Callables and classes are named by import path, ``"module:qualname"``.
Every problem is a `SpecError` naming its place in the spec
(``steps[1].branches[0][0].job``). ``spec.schema.json`` beside this module
is the same format as a JSON Schema; `tests/test_spec.py` keeps the two in
agreement.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any, Final, NoReturn

from ._coordinator import Coordinator
from ._core.callbacks import type_name
from ._core.retry import Retry
from ._core.step import Parallel, Step
from ._errors import SpecError, StepDefinitionError

#: The version of the spec format, the value of its ``"choreograph"`` key.
VERSION: Final = 1
#: The keys of the document, of a step and of a group, in the order `dump` writes them.
DOCUMENT_KEYS: Final = ("choreograph", "input", "strict_prechecks", "steps")
STEP_KEYS: Final = ("step", "job", "precheck", "retry", "timeout", "compensate", "compensate_failed")
GROUP_KEYS: Final = ("parallel", "max_workers", "branches")
#: `Retry`'s options and their defaults (its private fields left out).
RETRY_DEFAULTS: Final = {f.name: f.default for f in fields(Retry) if not f.name.startswith("_")}
#: The file suffixes `load` reads.
SUFFIXES: Final = (".json", ".toml")
#: The callbacks of a step, the keys that name them.
CALLBACK_KEYS: Final = ("precheck", "job", "compensate")


# -- reading -------------------------------------------------------------------------------


def load(cls: type[Coordinator[Any]], source: object) -> Coordinator[Any]:
    """
    Read the spec *source* (a path or a mapping) and return the coordinator it describes, made by *cls*.

    Raises:
        SpecError: Anything wrong with *source*, naming its place.
    """
    document = _Reader().document(_read(source))
    return _build(cls, document)


@dataclass(frozen=True, slots=True)
class _Document:
    """A spec, read and checked, before a coordinator is made of it."""

    input_ref: str | None
    input_type: object
    strict_prechecks: bool
    nodes: tuple[Step[Any] | Parallel, ...]
    places: dict[str, str]  # casefolded name -> the place of its step or group


def _build(cls: type[Coordinator[Any]], document: _Document) -> Coordinator[Any]:
    """Make the coordinator: ``cls[input](strict_prechecks=...)``, then add the nodes one by one."""
    maker: Any = cls
    if document.input_ref is not None:
        try:
            maker = maker[document.input_type]  # what `Coordinator[Order](...)` does in code
        except TypeError as exc:
            raise SpecError("input", f"{document.input_ref!r} can't be an input type: {exc}") from exc
    made: Coordinator[Any] = maker(strict_prechecks=document.strict_prechecks)
    for index, node in enumerate(document.nodes):
        try:
            made.add_step(node)
        except StepDefinitionError as exc:
            place = document.places.get(exc.step.casefold(), f"steps[{index}]")
            if exc.callback in CALLBACK_KEYS:
                place = f"{place}.{exc.callback}"
            raise SpecError(place, str(exc)) from exc
    return made


def _read(source: object) -> object:
    """The spec's data: *source* itself when it is a mapping, else the parsed file."""
    if isinstance(source, Mapping):
        return source
    path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
    if not isinstance(path, str):
        problem = f"a spec is a path to a .json or .toml file, or a mapping; got {type_name(source)}"
        raise SpecError("", problem)
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        got = repr(suffix) if suffix else "no suffix"
        raise SpecError("", f"{path}: a spec file's name ends in .json or .toml, got {got}")
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise SpecError("", f"no spec file at {path}") from exc
    except OSError as exc:
        raise SpecError("", f"{path}: can't be read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError("", f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return _parse_json(path, text) if suffix == ".json" else _parse_toml(path, text)


class _NotJson(ValueError):
    """What the JSON parser's hooks raise: valid syntax, but not what JSON means."""


def _parse_json(path: str, text: str) -> object:
    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        made: dict[str, object] = {}
        for key, value in pairs:
            if key in made:
                raise _NotJson(f"the key {key!r} appears twice in one object")
            made[key] = value
        return made

    def constant(name: str) -> NoReturn:
        raise _NotJson(f"{name} is not a JSON number")

    try:
        return json.loads(text, object_pairs_hook=unique, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise SpecError("", f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except _NotJson as exc:
        raise SpecError("", f"{path}: invalid JSON: {exc}") from exc


def _parse_toml(path: str, text: str) -> object:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends with "(at line L, column C)"
        raise SpecError("", f"{path}: invalid TOML: {exc}") from exc


def _at(where: str, key: str) -> str:
    """
    The place of *key* inside *where*.

    >>> _at("", "steps"), _at("steps[0]", "job")
    ('steps', 'steps[0].job')
    """
    return f"{where}.{key}" if where else key


def _known(data: Mapping[Any, object], where: str, allowed: tuple[str, ...], what: str) -> None:
    """Refuse a key that is not in *allowed*."""
    for key in data:
        if not isinstance(key, str):
            raise SpecError(where, f"keys are strings, got {key!r}")
        if key not in allowed:
            raise SpecError(_at(where, key), f"unknown key {key!r}: {what} has {', '.join(map(repr, allowed))}")


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(where, f"expected true or false, got {_shown(value)}")
    return value


def _int(value: object, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(where, f"expected an integer >= {minimum}, got {_shown(value)}")
    if value < minimum:
        raise SpecError(where, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(where, f"expected a number, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    """
    A value's type for messages, with the value itself when it is short.

    >>> _shown(True), _shown("3"), _shown([1, 2]), _shown(None)
    ('a bool (True)', "a str ('3')", 'a list', 'null')
    """
    if value is None:  # JSON's null, or None in a mapping
        return "null"
    kind = type_name(value)
    article = "an" if kind[:1] in "aeiou" else "a"
    if isinstance(value, bool | int | float | str) and len(repr(value)) <= 40:  # noqa: PLR2004 - short enough to quote
        return f"{article} {kind} ({value!r})"
    return f"{article} {kind}"


def resolve(ref: object, where: str) -> object:
    """
    Import what ``"module:qualname"`` names (the qualname may be dotted: ``"shop.steps:Checks.credit"``).

    >>> resolve("os.path:join", "job").__name__
    'join'

    Raises:
        SpecError: *ref* is not such a string, the module does not import,
            or it has no such attribute.
    """
    if not isinstance(ref, str):
        raise SpecError(where, f"expected a 'module:qualname' string, got {_shown(ref)}")
    module_name, colon, qualname = ref.partition(":")
    if not colon or not _dotted(module_name) or not _dotted(qualname):
        raise SpecError(where, f"expected 'module:qualname' (for example 'shop.steps:validate'), got {ref!r}")
    found: object = _import(module_name, where)
    parts = qualname.split(".")
    for index, part in enumerate(parts):
        try:
            found = getattr(found, part)
        except AttributeError:
            owner = f"module {module_name!r}" if index == 0 else repr(f"{module_name}:{'.'.join(parts[:index])}")
            raise SpecError(where, f"{owner} has no attribute {part!r}") from None
    return found


def _is_type(hint: object) -> bool:
    """
    Tell whether *hint* can be a type argument: a class, ``None``, a generic alias, a ``NewType``, a type alias.

    >>> _is_type(int), _is_type(list[int]), _is_type(int | None), _is_type(None), _is_type(len), _is_type(3)
    (True, True, True, True, False, False)
    """
    return (
        hint is None
        or isinstance(hint, type | typing.NewType)
        or typing.get_origin(hint) is not None
        or type(hint).__name__ == "TypeAliasType"  # `type Rows = list[Row]`, Python >= 3.12
    )


def _dotted(name: str) -> bool:
    """
    Tell whether *name* is identifiers joined by dots.

    >>> _dotted("shop.steps"), _dotted("shop..steps"), _dotted(".steps"), _dotted("1st")
    (True, False, False, False)
    """
    return all(part.isidentifier() for part in name.split("."))


def _import(module_name: str, where: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and f"{module_name}.".startswith(f"{exc.name}."):  # the module or a parent is missing
            also = "" if exc.name == module_name else f" (importing {module_name!r})"
            raise SpecError(where, f"no module named {exc.name!r}{also}") from exc
        raise SpecError(where, f"module {module_name!r} does not import: {_one_line(exc)}") from exc
    except Exception as exc:  # whatever the module raised while it was imported
        raise SpecError(where, f"module {module_name!r} does not import: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    r"""
    *exc* as ``Type: message``, on one line.

    >>> _one_line(ValueError("bad\nvalue"))
    'ValueError: bad value'
    """
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Reader:
    """Checks a spec's data in document order, and makes its steps and groups."""

    def __init__(self) -> None:
        #: casefolded name -> (the name, "step" or "group", its place)
        self.names: dict[str, tuple[str, str, str]] = {}

    def document(self, data: object) -> _Document:
        if not isinstance(data, Mapping):
            raise SpecError("", f"a spec is a mapping (a JSON object, a TOML document), got {_shown(data)}")
        if "choreograph" not in data:
            raise SpecError("", "missing key 'choreograph': the version of the spec format, 1")
        version = data["choreograph"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise SpecError("choreograph", f"the version of the spec format is the integer 1, got {_shown(version)}")
        if version != VERSION:
            raise SpecError("choreograph", f"unsupported version {version}: this choreograph reads version {VERSION}")
        _known(data, "", DOCUMENT_KEYS, "a spec")
        input_ref: str | None = None
        input_type: object = None
        if "input" in data:
            input_type = resolve(data["input"], "input")
            input_ref = str(data["input"])
            if not _is_type(input_type):
                raise SpecError("input", f"{input_ref!r} is {_shown(input_type)}, not a type")
        strict = _bool(data["strict_prechecks"], "strict_prechecks") if "strict_prechecks" in data else False
        if "steps" not in data:
            raise SpecError("", "missing key 'steps': the list of steps and groups")
        nodes = self.sequence(data["steps"], "steps", "steps")
        places = {folded: place for folded, (_, _, place) in self.names.items()}
        return _Document(input_ref, input_type, strict, tuple(nodes), places)

    def sequence(self, items: object, where: str, what: str) -> list[Step[Any] | Parallel]:
        if not isinstance(items, list):
            raise SpecError(where, f"{what} is a list of steps and groups, got {_shown(items)}")
        return [self.node(item, f"{where}[{index}]") for index, item in enumerate(items)]

    def node(self, data: object, where: str) -> Step[Any] | Parallel:
        if not isinstance(data, Mapping):
            problem = "expected a step (with 'step' and 'job') or a group (with 'parallel' and 'branches')"
            raise SpecError(where, f"{problem}, got {_shown(data)}")
        is_step, is_group = "step" in data, "parallel" in data
        if is_step and is_group:
            raise SpecError(where, "an item is a step ('step') or a group ('parallel'), not both")
        if is_step:
            return self.step(data, where)
        if is_group:
            return self.group(data, where)
        raise SpecError(where, "an item needs 'step' (a step's name) or 'parallel' (a group's name)")

    def name(self, data: Mapping[str, object], key: str, where: str) -> str:
        value, at = data[key], _at(where, key)
        kind = "step" if key == "step" else "group"
        if not isinstance(value, str):
            raise SpecError(at, f"a {kind}'s name is a string, got {_shown(value)}")
        if not value.strip():
            raise SpecError(at, f"a {kind}'s name must not be empty")
        taken = self.names.get(value.casefold())
        if taken is not None:
            name, what, place = taken
            raise SpecError(at, f"the name {value!r} is taken by the {what} {name!r} at {place} (names ignore case)")
        self.names[value.casefold()] = (value, kind, where)
        return value

    def step(self, data: Mapping[str, object], where: str) -> Step[Any]:
        _known(data, where, STEP_KEYS, "a step")
        name = self.name(data, "step", where)
        if "job" not in data:
            raise SpecError(where, f"missing key 'job': the job of step {name!r}")
        callbacks = {key: self.callback(data[key], _at(where, key)) for key in CALLBACK_KEYS if key in data}
        retry = self.retry(data["retry"], _at(where, "retry")) if "retry" in data else None
        timeout: float | None = None
        if "timeout" in data:
            timeout = _number(data["timeout"], _at(where, "timeout"))
            if not timeout > 0:  # NaN too
                raise SpecError(_at(where, "timeout"), f"expected a number of seconds > 0, got {timeout!r}")
        compensate_failed = False
        if "compensate_failed" in data:
            compensate_failed = _bool(data["compensate_failed"], _at(where, "compensate_failed"))
        return Step(
            name,
            callbacks["job"],
            callbacks.get("precheck"),
            retry=retry,
            compensate=callbacks.get("compensate"),
            compensate_failed=compensate_failed,
            timeout=timeout,
        )

    def group(self, data: Mapping[str, object], where: str) -> Parallel:
        _known(data, where, GROUP_KEYS, "a group")
        name = self.name(data, "parallel", where)
        workers = _int(data["max_workers"], _at(where, "max_workers"), minimum=1) if "max_workers" in data else None
        if "branches" not in data:
            raise SpecError(where, f"missing key 'branches': the branches of group {name!r}")
        at = _at(where, "branches")
        branches = data["branches"]
        if not isinstance(branches, list):
            problem = "branches is a list of branches, each a list of steps and groups"
            raise SpecError(at, f"{problem}; got {_shown(branches)}")
        if not branches:
            raise SpecError(at, f"group {name!r} needs at least one branch")
        made: list[list[Step[Any] | Parallel]] = []
        for index, branch in enumerate(branches):
            nodes = self.sequence(branch, f"{at}[{index}]", "a branch")
            if not nodes:
                raise SpecError(f"{at}[{index}]", "a branch needs at least one step or group")
            made.append(nodes)
        return Parallel(name, *made, max_workers=workers)

    @staticmethod
    def callback(ref: object, where: str) -> Any:
        found = resolve(ref, where)
        if not callable(found):
            raise SpecError(where, f"{ref!r} is not callable: it is {_shown(found)}")
        return found

    def retry(self, data: object, where: str) -> Retry:
        if not isinstance(data, Mapping):
            raise SpecError(where, f"expected a table of Retry's options, got {_shown(data)}")
        _known(data, where, tuple(RETRY_DEFAULTS), "a retry")
        options: dict[str, Any] = {}
        for key, value in data.items():
            at = _at(where, key)
            if key == "attempts":
                options[key] = _int(value, at, minimum=1)
            elif key == "prechecks":
                options[key] = _bool(value, at)
            elif key == "on":
                options[key] = self.exceptions(value, at)
            else:  # initial, multiplier, max_delay, jitter, timeout: Retry checks their ranges
                options[key] = _number(value, at)
        try:
            return Retry(**options)
        except (TypeError, ValueError) as exc:  # a value out of range: Retry's message names the option
            named = re.match(r"Retry\((\w+)=", str(exc))
            at = _at(where, named[1]) if named and named[1] in options else where
            raise SpecError(at, str(exc)) from exc

    def exceptions(self, value: object, where: str) -> type[Exception] | tuple[type[Exception], ...]:
        if not isinstance(value, list):
            return self.exception(value, where)
        if not value:
            raise SpecError(where, "expected at least one exception class")
        return tuple(self.exception(ref, f"{where}[{index}]") for index, ref in enumerate(value))

    @staticmethod
    def exception(ref: object, where: str) -> type[Exception]:
        found = resolve(ref, where)
        if not isinstance(found, type) or not issubclass(found, Exception):
            raise SpecError(where, f"{ref!r} is not an exception class (a subclass of Exception)")
        return found


# -- writing -------------------------------------------------------------------------------


def dump(flow: tuple[Step[Any] | Parallel, ...], *, input_type: object, strict_prechecks: bool) -> dict[str, object]:
    """
    Write *flow* (a coordinator's top-level nodes) as a spec: a JSON-able dict, without default values.

    Args:
        flow: The coordinator's `flow`.
        input_type: The coordinator's ``input_type`` (``object``: not declared).
        strict_prechecks: The coordinator's option.

    Raises:
        SpecError: A callable, the input type or an exception class can't be
            named by import path, or a retry policy is not a `Retry`.
    """
    spec: dict[str, object] = {"choreograph": VERSION}
    if input_type is not object:
        spec["input"] = name_of(input_type, "input", "the input type")
    if strict_prechecks:
        spec["strict_prechecks"] = True
    spec["steps"] = [_dump_node(node, f"steps[{index}]") for index, node in enumerate(flow)]
    return spec


def _dump_node(node: Step[Any] | Parallel, where: str) -> dict[str, object]:
    if isinstance(node, Parallel):
        item: dict[str, object] = {"parallel": node.name}
        if node.max_workers is not None:
            item["max_workers"] = node.max_workers
        item["branches"] = [
            [_dump_node(child, f"{where}.branches[{index}][{position}]") for position, child in enumerate(branch)]
            for index, branch in enumerate(node.branches)
        ]
        return item
    whose = f"step {node.name!r}"
    item = {"step": node.name, "job": name_of(node.job, f"{where}.job", f"{whose}: the job")}
    if node.precheck is not None:
        item["precheck"] = name_of(node.precheck, f"{where}.precheck", f"{whose}: the precheck")
    if node.retry is not None:
        item["retry"] = _dump_retry(node.retry, f"{where}.retry", whose)
    if node.timeout is not None and not math.isinf(node.timeout):  # inf: no limit, as without one
        item["timeout"] = node.timeout
    if node.compensate is not None:
        item["compensate"] = name_of(node.compensate, f"{where}.compensate", f"{whose}: the compensation")
    if node.compensate_failed:
        item["compensate_failed"] = True
    return item


def _dump_retry(retry: object, where: str, whose: str) -> dict[str, object]:
    if type(retry) is not Retry:
        kind = type(retry)
        shown = f"choreograph.{kind.__qualname__}" if kind.__module__.startswith("choreograph.") else type_name(retry)
        problem = f"{whose}: the retry policy is a {shown}; a spec holds only a choreograph.Retry"
        raise SpecError(where, problem)
    options: dict[str, object] = {}
    for key, default in RETRY_DEFAULTS.items():
        value = getattr(retry, key)
        if value == default or (key == "timeout" and value == math.inf):  # inf: no limit, as None
            continue
        if key == "on":
            kinds: tuple[type, ...] = value if isinstance(value, tuple) else (value,)
            names = [name_of(kind, f"{where}.on", f"{whose}: the retried exception") for kind in kinds]
            options[key] = names if isinstance(value, tuple) else names[0]
        else:
            options[key] = value
    return options


def name_of(obj: object, where: str, what: str) -> str:
    """
    The import path, ``"module:qualname"``, that `resolve` turns back into *obj*.

    >>> name_of(json.dumps, "job", "the job")
    'json:dumps'

    Raises:
        SpecError: *obj* has no such path: a lambda, a local function, an
            object of ``__main__``, an object without a ``__qualname__``
            (an instance, a ``functools.partial``), or one whose path names
            another object (a bound method of an instance).
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        problem = "has no import path: only functions, classes and methods are named as 'module:qualname'"
        raise SpecError(where, f"{what} is {_shown(obj)}, which {problem}")
    if "<lambda>" in qualname:
        raise SpecError(where, f"{what} is a lambda, which has no import path: define it with def at module level")
    if "<locals>" in qualname:
        problem = f"{what} is {qualname}, defined in a function, which has no import path: define it at module level"
        raise SpecError(where, problem)
    if module == "__main__":
        problem = f"{what} is __main__:{qualname}, defined in the script being run: define it in a module to import"
        raise SpecError(where, problem)
    ref = f"{module}:{qualname}"
    try:
        found = resolve(ref, where)
    except SpecError as exc:
        raise SpecError(where, f"{what}'s import path {ref!r} does not resolve: {exc.problem}") from exc
    if found is not obj and not (inspect.ismethod(obj) and found == obj):
        raise SpecError(where, f"{what}'s import path {ref!r} names another object, not this {type_name(obj)}")
    return ref
