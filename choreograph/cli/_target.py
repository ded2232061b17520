"""
What a command runs and where: the TARGET coordinator, the STORE, each record's key.

Every problem here is the user's to fix (a wrong name, a missing file), so it
is raised as a `click.UsageError` with one line saying what is wrong: the
command exits with status 2.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import click

from .._coordinator import Coordinator
from .._errors import ChoreographError, StoreError
from ..durable.codec import Codec, CodecError, JsonCodec
from ..durable.postgres import PostgresStore
from ..durable.protocol import Store
from ..durable.sqlite import SqliteStore

#: The extensions of flow spec files (`Coordinator.from_spec`).
SPEC_FILES: Final = (".json", ".toml")


def load_target(target: str) -> Coordinator[Any]:
    """
    Import TARGET, ``module:attribute`` (the attribute may be dotted), and return the coordinator it names.

    A TARGET ending ``.json`` or ``.toml`` is a flow spec file instead (see `Coordinator.from_spec`).

    The current folder comes first on ``sys.path``, as for ``python -m``.
    """
    if target.endswith(SPEC_FILES):
        return _load_spec(target)
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise click.UsageError(f"TARGET must be module:attribute (for example shop.flows:orders), got {target!r}")
    found: object = _import(module_name, target)
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise click.UsageError(f"TARGET {target!r}: {module_name} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not isinstance(found, Coordinator):
        raise click.UsageError(f"TARGET {target!r} is a {type(found).__name__}, not a choreograph Coordinator")
    return found


def _load_spec(target: str) -> Coordinator[Any]:
    """Load a flow spec file (`Coordinator.from_spec`), importing what it names with the current folder first."""
    path = Path(target)
    if not path.is_file():
        raise click.UsageError(f"TARGET {target!r}: no such spec file")
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return Coordinator.from_spec(path)
    except ChoreographError as exc:  # SpecError names the place in the spec
        raise click.UsageError(f"TARGET {target!r}: {_one_line(exc)}") from exc


def _import(module_name: str, target: str) -> object:
    """Import TARGET's module, the current folder first on ``sys.path`` (as for ``python -m``)."""
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise click.UsageError(f"TARGET {target!r}: importing {module_name} failed: {_one_line(exc)}") from exc
        raise click.UsageError(
            f"TARGET {target!r}: no module named {exc.name!r} (run from the folder that holds it, or set PYTHONPATH)"
        ) from exc
    except ChoreographError as exc:  # a definition error while the module made its flow
        raise click.UsageError(f"TARGET {target!r}: {_one_line(exc)}") from exc
    except Exception as exc:  # whatever the module raised, in one line
        raise click.UsageError(f"TARGET {target!r}: importing {module_name} failed: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    r"""
    *exc* as ``Type: message``, on one line.

    >>> _one_line(ValueError("bad\nvalue"))
    'ValueError: bad value'
    """
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_store(location: str, *, create: bool, codec: Codec | None = None) -> Store:
    """
    Open STORE: a SQLite file (created only when *create*), or a ``postgresql://`` URL.

    A URL's fragment names the schema (``postgresql://host/db#batch``; default
    ``choreograph``), as `PostgresStore.location` shows it.

    Args:
        location: The path or URL.
        create: Make a new store when the file is missing (``run`` does;
            inspecting a store that isn't there is a mistake).
        codec: The store's codec (default: `JsonCodec`).
    """
    if location.startswith(("postgresql://", "postgres://")):
        url, _, schema = location.partition("#")
        try:
            return PostgresStore(url, schema=schema or "choreograph", codec=codec, create=create)
        except (ImportError, StoreError, ValueError) as exc:
            raise click.UsageError(str(exc)) from exc
    path = Path(location)
    if path.is_dir():
        raise click.UsageError(f"STORE {location!r} is a folder, not a store file")
    if not create and not path.exists():
        raise click.UsageError(f"no store at {location!r}")
    try:
        return SqliteStore(path, codec=codec)
    except StoreError as exc:
        raise click.UsageError(str(exc)) from exc


def flow_store(flow: Coordinator[Any], location: str | None, *, create: bool) -> Store | None:
    """
    The store a command runs *flow* with: STORE when given, else the flow's own.

    A STORE that is the flow's own store's file is that store; another one is
    opened with the flow's store's codec, if the flow has a store.
    """
    own = flow.store
    if location is None:
        return own
    if own is not None and (own.location == location or _same_file(own.location, location)):
        return own
    return open_store(location, create=create, codec=None if own is None else own.codec)


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:
        return False


def coordinator_key(flow: Coordinator[Any]) -> Callable[[Any], str | int] | None:
    """The coordinator's own ``key=`` function, if it has one."""
    return flow.key


def input_type(flow: Coordinator[Any]) -> object:
    """The ``T`` of ``Coordinator[T]`` (``object`` when not declared)."""
    return flow.input_type


def field_key(field: str) -> Callable[[object], str | int]:
    """
    A key function reading *field* of a record: an attribute, or a mapping's item.

    >>> field_key("id")({"id": "A-1"})
    'A-1'
    """

    def key(record: object) -> str | int:
        if isinstance(record, Mapping):
            value: Any = record[field]
        else:
            value = getattr(record, field)
        return value  # type: ignore[no-any-return]  # the runner checks it is a str or an int

    key.__qualname__ = f"field {field!r}"
    return key


def with_store(flow: Coordinator[Any], store: Store, key: Callable[[Any], str | int] | None) -> Coordinator[Any]:
    """
    *flow*, durable with *store* and *key*: a shallow copy that shares its steps, listeners and options.

    *flow* itself is left as it is.
    """
    if flow.store is store and key is flow.key:
        return flow
    return flow.with_store(store, key=key)


class InspectCodec(JsonCodec):
    """
    The codec of ``runs`` and ``show``, which import no flow: what can't be rebuilt is shown as plain JSON.

    JSON stores name the classes of dataclasses, named tuples, enums and
    pydantic models, and rebuild them only when their module is imported.
    Inspection imports nothing, so such a value comes back as its plain
    JSON: a dataclass or a model as its fields, a named tuple as a list, a
    decimal or a date as its text.

    >>> InspectCodec().decode('{"$dataclass": "shop:Order", "fields": {"id": "A-1", "amount": {"$decimal": "2.50"}}}')
    {'id': 'A-1', 'amount': '2.50'}
    """

    def decode(self, text: str) -> object:
        """Decode *text*; when a class in it can't be rebuilt, return it as plain JSON."""
        try:
            return super().decode(text)
        except CodecError:
            try:
                loaded: object = json.loads(text)
            except ValueError:
                return text
            return plain(loaded)


def plain(data: object) -> object:
    """
    JSON stored by `JsonCodec`, with its tags taken off: what the value would look like as plain JSON.

    >>> plain({"$tuple": [1, {"$date": "2026-01-02"}]}), plain({"$enum": "shop:Color", "value": "red"})
    ([1, '2026-01-02'], 'red')
    """
    if isinstance(data, list):
        return [plain(item) for item in data]
    if not isinstance(data, dict):
        return data
    if not data or not str(next(iter(data))).startswith("$"):
        return {key: plain(value) for key, value in data.items()}
    tag, payload = next(iter(data.items()))
    inside = {
        "$dataclass": "fields",
        "$pydantic": "data",
        "$namedtuple": "values",
        "$enum": "value",
        "$custom": "value",
    }
    if tag in inside:
        return plain(data.get(inside[tag]))
    if tag == "$dict":
        return {json.dumps(plain(key)): plain(value) for key, value in payload}
    return plain(payload)  # sets and tuples as lists; decimals, dates, UUIDs, paths as text


def inspect_store(location: str) -> Store:
    """Open STORE to read it (it must exist), with the `InspectCodec`."""
    return open_store(location, create=False, codec=InspectCodec())


__all__ = [
    "InspectCodec",
    "coordinator_key",
    "field_key",
    "flow_store",
    "input_type",
    "inspect_store",
    "load_target",
    "open_store",
    "with_store",
]
