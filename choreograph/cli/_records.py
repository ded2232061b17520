"""
INPUT for ``choreograph run``: records read from JSON lines, a JSON array or CSV, converted to the flow's input type.

Conversion is pydantic's: a `pydantic.TypeAdapter` of the coordinator's input
type (a dataclass, a ``TypedDict``, a ``NamedTuple``, a pydantic model, or any
other type pydantic validates) in its lax mode, which turns CSV's strings
into the annotated field types (``"42"`` to an ``int``, ``"2026-01-02"`` to a
``date``, ``"false"`` to ``False``, ``"12.50"`` to a ``Decimal``). An empty CSV
cell is ``None`` for a field that admits it, and is left out for a field with
a default. Without a declared input type, records are passed on as read.

A record that can't be read or converted is a `RecordError`: the batch goes
on without it. A file that can't be read at all is a `click.UsageError`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, NoReturn, NotRequired, Required, get_args, get_origin, get_type_hints

import click
from typing_extensions import is_typeddict

from .._core.generics import is_known

Format = Literal["jsonl", "json", "csv"]
FORMATS: tuple[str, ...] = ("auto", "jsonl", "json", "csv")
_SUFFIXES: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


class RecordError(ValueError):
    """One record of INPUT can't be read or converted: it is reported as a failed run, and the batch goes on."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)
        self.where, self.problem = where, problem

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


class Source:
    """
    INPUT: a file, or ``-`` for standard input, in one of the formats.

    Args:
        location: The path, or ``-``.
        chosen: ``--format``: ``"auto"`` tells JSON lines, a JSON array or
            CSV from the extension, then from the first character.
    """

    def __init__(self, location: str, chosen: str) -> None:
        self.location = location
        self._stream: IO[str] | None = None
        self._array: list[object] | None = None
        if location == "-":
            self._stream = sys.stdin
        else:
            path = Path(location)
            if path.is_dir():
                raise click.UsageError(f"INPUT {location!r} is a folder")
            try:
                # utf-8-sig: a byte order mark (CSV saved by a spreadsheet) is not part of the first field.
                self._stream = path.open(encoding="utf-8-sig", newline="")
            except OSError as exc:
                raise click.UsageError(f"cannot read INPUT {location!r}: {exc.strerror or exc}") from exc
        try:
            self.format: Format = self._tell(chosen)
            if self.format == "json":
                self._array = self._load_array()
        except click.UsageError:
            self.close()
            raise

    def _tell(self, chosen: str) -> Format:
        if chosen != "auto":
            return chosen  # type: ignore[return-value]  # click checked it is one of FORMATS
        if self.location == "-":
            return "jsonl"
        found = _SUFFIXES.get(Path(self.location).suffix.lower())
        if found is not None:
            return found
        first = self._peek()
        if first == "[":
            return "json"
        if first == "{" or Path(self.location).suffix.lower() == ".json":
            return "jsonl"
        raise click.UsageError(f"cannot tell the format of INPUT {self.location!r}: give --format jsonl, json or csv")

    def _peek(self) -> str:
        """The first character that is not white space (the stream is a file: it is rewound)."""
        stream = self._stream
        assert stream is not None  # noqa: S101 - open until `close`
        try:
            while (char := stream.read(1)).isspace():
                pass
            stream.seek(0)
        except UnicodeDecodeError as exc:
            self._unreadable(exc)
        return char

    def _unreadable(self, exc: Exception) -> NoReturn:
        raise click.UsageError(f"cannot read INPUT {self.location!r}: {exc}") from exc

    def _load_array(self) -> list[object]:
        stream = self._stream
        assert stream is not None  # noqa: S101
        try:
            loaded: object = json.load(stream)
        except UnicodeDecodeError as exc:
            self._unreadable(exc)
        except ValueError as exc:
            raise click.UsageError(f"INPUT {self.location!r} is not JSON: {exc}") from exc
        if not isinstance(loaded, list):
            raise click.UsageError(f"INPUT {self.location!r} is JSON but not an array of records")
        return loaded

    def count(self) -> int | None:
        """How many records a file holds (for the progress bar), reading it once more; None for standard input."""
        if self._array is not None:
            return len(self._array)
        stream = self._stream
        if self.location == "-" or stream is None:
            return None
        try:
            if self.format == "csv":
                counted = max(sum(1 for _ in csv.reader(stream)) - 1, 0)
            else:
                counted = sum(1 for line in stream if line.strip())
            stream.seek(0)
        except (UnicodeDecodeError, csv.Error):
            stream.seek(0)
            return None
        return counted

    def records(self) -> Iterator[tuple[int, object]]:
        """
        Yield ``(position, record)`` for every record, counted from 0; a record that can't be read is a `RecordError`.

        Raises:
            click.UsageError: The file can't be read any more (it isn't text).
        """
        try:
            if self._array is not None:
                yield from enumerate(self._array)
            elif self.format == "csv":
                yield from self._csv()
            else:
                yield from self._lines()
        except UnicodeDecodeError as exc:
            self._unreadable(exc)

    def _lines(self) -> Iterator[tuple[int, object]]:
        assert self._stream is not None  # noqa: S101
        position = 0
        for number, line in enumerate(self._stream, 1):
            if not line.strip():
                continue
            try:
                record: object = json.loads(line)
            except ValueError as exc:
                record = RecordError(f"line {number}", f"not JSON ({exc})")
            yield position, record
            position += 1

    def _csv(self) -> Iterator[tuple[int, object]]:
        assert self._stream is not None  # noqa: S101
        rows = csv.reader(self._stream)
        header = next(rows, None)
        if header is None:
            return
        position = 0
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                yield position, RecordError(f"line {rows.line_num}", f"not CSV ({exc})")
                position += 1
                continue
            if not row:
                continue
            if len(row) > len(header):
                yield position, RecordError(f"line {rows.line_num}", f"{len(row)} fields, the header has {len(header)}")
            else:
                yield position, _Row(zip(header, row, strict=False), f"line {rows.line_num}")
            position += 1

    def close(self) -> None:
        """Close the file (not standard input)."""
        if self._stream is not None and self._stream is not sys.stdin:
            self._stream.close()


class _Row(dict[str, str]):
    """A CSV row: its cells by column, and where it is in the file."""

    def __init__(self, cells: Iterator[tuple[str, str]], where: str) -> None:
        super().__init__(cells)
        self.where = where


class Converter:
    """
    Turns raw records into the flow's input type with pydantic (see the module's docstring).

    Args:
        target: The ``T`` of ``Coordinator[T]``.
    """

    def __init__(self, target: object) -> None:
        self.target = target
        #: The fields of a record type (name to annotation), else None.
        self.fields: dict[str, object] | None = None
        #: The fields that have defaults.
        self._defaulted: set[str] = set()
        self._named_tuple = False
        self._adapter: Any = None
        if not is_known(target):
            return
        from pydantic import TypeAdapter  # noqa: PLC0415 - the extra, imported when records are converted

        self._read_fields(target)
        self._adapter = TypeAdapter[Any](_adaptable(target))  # type: ignore[arg-type]  # any type the flow declares

    def _read_fields(self, target: Any) -> None:
        model_fields = getattr(target, "model_fields", None)
        if isinstance(target, type) and isinstance(model_fields, Mapping):  # a pydantic model
            self.fields = {name: field.annotation for name, field in model_fields.items()}
            self._defaulted = {name for name, field in model_fields.items() if not field.is_required()}
        elif dataclasses.is_dataclass(target) and isinstance(target, type):
            hints = get_type_hints(target)
            chosen = [field for field in dataclasses.fields(target) if field.init]
            self.fields = {field.name: hints.get(field.name, Any) for field in chosen}
            self._defaulted = {
                field.name
                for field in chosen
                if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            }
        elif isinstance(target, type) and issubclass(target, tuple) and hasattr(target, "_fields"):  # a NamedTuple
            hints = get_type_hints(target)
            self.fields = {name: hints.get(name, Any) for name in target._fields}
            self._defaulted = set(getattr(target, "_field_defaults", {}))
            self._named_tuple = True
        elif is_typeddict(target):
            self.fields = dict(get_type_hints(target))
            self._defaulted = set(target.__optional_keys__)

    def convert(self, raw: object) -> object:
        """
        Return *raw* as the input type.

        Raises:
            RecordError: It doesn't convert (the message names the fields).
        """
        from pydantic import ValidationError  # noqa: PLC0415 - loaded already, by `__init__`

        if isinstance(raw, RecordError):
            raise raw
        where = raw.where if isinstance(raw, _Row) else "record"
        if self._adapter is None:
            return dict(raw) if isinstance(raw, _Row) else raw
        if isinstance(raw, _Row):
            raw = self._cells(raw)
        if self._named_tuple and isinstance(raw, Mapping):
            raw = {name: value for name, value in raw.items() if name in (self.fields or {})}
        try:
            return self._adapter.validate_python(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'the record'}: {error['msg']}" for error in exc.errors()
            )
            raise RecordError(where, problems) from None

    def _cells(self, row: _Row) -> object:
        """A CSV row for pydantic: empty cells become None or are left out; one column for a type without fields."""
        if self.fields is None:
            if len(row) != 1:
                raise RecordError(row.where, f"{len(row)} columns for an input of type {_name(self.target)}")
            return next(iter(row.values()))
        cells: dict[str, object] = {}
        for name, value in row.items():
            if value == "" and name in self.fields:
                if _admits_none(self.fields[name]):
                    cells[name] = None
                    continue
                if name in self._defaulted:
                    continue
            cells[name] = value
        return cells


def _name(target: object) -> str:
    return getattr(target, "__qualname__", None) or repr(target)


def _admits_none(hint: object) -> bool:
    """
    Tell whether a field annotated *hint* may hold None.

    >>> _admits_none(int | None), _admits_none(typing.Optional[str]), _admits_none(int), _admits_none(Any)
    (True, True, False, True)
    """
    if hint is None or hint is types.NoneType or not is_known(hint):
        return True
    if get_origin(hint) in (typing.Union, types.UnionType):
        return any(_admits_none(arg) for arg in get_args(hint))
    return False


def _adaptable(target: Any) -> object:
    """
    *target*, as pydantic can validate it: a ``typing.TypedDict`` of Python < 3.12 becomes ``typing_extensions``' one.

    pydantic refuses ``typing.TypedDict`` before Python 3.12 (it lacks what
    pydantic reads); the same dictionary type made with ``typing_extensions``
    validates the same records into the same plain dicts.
    """
    if not is_typeddict(target) or type(target).__module__ != "typing" or sys.version_info >= (3, 12):
        return target
    hints = get_type_hints(target)
    required = target.__required_keys__
    fields = {name: Required[hint] if name in required else NotRequired[hint] for name, hint in hints.items()}
    from typing_extensions import TypedDict  # noqa: PLC0415

    return TypedDict(target.__name__, fields)  # type: ignore[operator]  # the functional form


def jsonable(value: object) -> object:
    """
    *value* as JSON-able data (dataclasses, dates, decimals, models...), what can't be as its ``repr``.

    >>> import datetime
    >>> jsonable({"at": datetime.date(2026, 1, 2), "ids": (1, 2)})
    {'at': '2026-01-02', 'ids': [1, 2]}
    """
    from pydantic_core import to_jsonable_python  # noqa: PLC0415 - the extra

    return to_jsonable_python(value, fallback=repr)


__all__ = ["FORMATS", "Converter", "Format", "RecordError", "Source", "jsonable"]
