"""
How durable stores turn outputs, inputs and errors into text and back.

`JsonCodec` is the default: JSON, with tagged objects for the types people
actually return (tuples, sets, bytes, datetimes, Decimal, UUID, Path, Enum
members, dataclasses, named tuples, pydantic models). Decoding never imports a
module or runs code from the store: a class named in a store is looked up
among the modules already imported (or those registered with the codec), and
only dataclasses, Enum classes, named tuples and pydantic models are rebuilt.

`PickleCodec` is an explicit opt-in: it round-trips anything picklable, and
reading a store written with it can run arbitrary code.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import datetime as dt
import enum
import json
import math
import pickle
import sys
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Final, Protocol, runtime_checkable

from .._errors import ChoreographError

_SCALARS: Final = (str, int, float, bool, type(None))


class CodecError(ChoreographError, ValueError):
    """
    A value could not be encoded or decoded.

    Attributes:
        problem: What went wrong, naming the type.

    .. versionadded:: 0.1.0
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem

    def __str__(self) -> str:
        return self.problem


class StoredError(ChoreographError):
    """
    An error read back from a store, whose class could not be rebuilt.

    Attributes:
        type_name: The original error's class, as ``module.QualName``.
        message: ``str()`` of the original error.

    .. versionadded:: 0.1.0
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name, self.message = type_name, message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


@runtime_checkable
class Codec(Protocol):
    """
    Turns values into text for a store, and back.

    .. versionadded:: 0.1.0
    """

    name: str

    def encode(self, value: object) -> str:
        """Return *value* as text, or raise `CodecError` naming the type."""
        ...

    def decode(self, text: str) -> object:
        """Return the value *text* encodes, or raise `CodecError`."""
        ...

    def encode_error(self, error: BaseException) -> str:
        """Return *error* as text; never raises."""
        ...

    def decode_error(self, text: str) -> BaseException:
        """Return the error *text* encodes (a `StoredError` when it can't be rebuilt)."""
        ...


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class JsonCodec:
    """
    JSON with tagged objects; the default codec of stores.

    Args:
        types: Classes to accept by name even if their module is not imported
            when a store is read.
        encoders: Your own types: ``{cls: (to_json, from_json)}``. ``to_json``
            returns a JSON-able value (it may contain other supported values),
            ``from_json`` rebuilds the object.

    >>> codec = JsonCodec()
    >>> codec.decode(codec.encode({"at": dt.date(2026, 1, 2), "ids": (1, 2)}))
    {'at': datetime.date(2026, 1, 2), 'ids': (1, 2)}

    .. versionadded:: 0.1.0
    """

    name = "json"

    def __init__(
        self,
        *,
        types: tuple[type, ...] = (),
        encoders: dict[type, tuple[Callable[[Any], object], Callable[[Any], object]]] | None = None,
    ) -> None:
        self._types = {_qualified(cls): cls for cls in types}
        self._encoders = dict(encoders or {})
        self._decoders = {_qualified(cls): decode for cls, (_, decode) in self._encoders.items()}

    # -- encoding -----------------------------------------------------------

    def encode(self, value: object) -> str:
        """Return *value* as JSON text; raise `CodecError` for what JSON can't hold."""
        if type(value) is int:
            return str(value)  # what json.dumps writes, 20 times faster
        if type(value) is str:
            return json.dumps(value)
        try:
            return json.dumps(self._to_json(value, "output"), allow_nan=False, separators=(",", ":"))
        except CodecError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            msg = f"cannot encode a value of type {type(value).__qualname__} as JSON: {exc}"
            raise CodecError(msg) from exc

    def _to_json(self, value: object, where: str) -> object:  # noqa: C901, PLR0911, PLR0912
        kind = type(value)
        if kind in _SCALARS:
            if kind is float and not math.isfinite(value):  # type: ignore[arg-type]
                return {"$float": repr(value)}
            return value
        if kind is list:
            return [self._to_json(item, where) for item in value]  # type: ignore[attr-defined]
        if kind is dict:
            items: dict[Any, Any] = value  # type: ignore[assignment]
            if all(type(k) is str and not k.startswith("$") for k in items):
                return {k: self._to_json(v, where) for k, v in items.items()}
            return {"$dict": [[self._to_json(k, where), self._to_json(v, where)] for k, v in items.items()]}
        custom = self._encoders.get(kind)
        if custom is not None:
            return {"$custom": _qualified(kind), "value": self._to_json(custom[0](value), where)}
        if isinstance(value, enum.Enum):
            return {"$enum": _qualified(kind), "value": self._to_json(value.value, where)}
        if kind is tuple:
            return {"$tuple": [self._to_json(item, where) for item in value]}  # type: ignore[attr-defined]
        if isinstance(value, tuple) and hasattr(kind, "_fields"):
            return {"$namedtuple": _qualified(kind), "values": [self._to_json(v, where) for v in value]}
        if kind is set or kind is frozenset:
            items_ = sorted(value, key=repr)  # type: ignore[call-overload]
            return {f"${kind.__name__}": [self._to_json(item, where) for item in items_]}
        if kind is bytes or kind is bytearray:
            return {f"${kind.__name__}": base64.b64encode(value).decode("ascii")}  # type: ignore[arg-type]
        if kind is dt.datetime or kind is dt.date or kind is dt.time:
            return {f"${kind.__name__}": value.isoformat()}  # type: ignore[attr-defined]
        if kind is dt.timedelta:
            return {"$timedelta": [value.days, value.seconds, value.microseconds]}  # type: ignore[attr-defined]
        if kind is Decimal:
            return {"$decimal": str(value)}
        if kind is uuid.UUID:
            return {"$uuid": str(value)}
        if isinstance(value, BaseException):
            return {"$error": self._error_record(value)}
        if isinstance(value, PurePath):
            return {"$path": str(value), "windows": isinstance(value, PureWindowsPath)}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: self._to_json(getattr(value, f.name), where) for f in dataclasses.fields(value) if f.init}
            return {"$dataclass": _qualified(kind), "fields": fields}
        dump = getattr(value, "model_dump", None)
        if dump is not None and hasattr(kind, "model_validate"):  # a pydantic model
            return {"$pydantic": _qualified(kind), "data": dump(mode="json")}
        msg = (
            f"cannot encode a value of type {_qualified(kind)} as JSON: give JsonCodec(encoders=...) a"
            " converter for it, return a supported type, or use PickleCodec"
        )
        raise CodecError(msg)

    # -- decoding -----------------------------------------------------------

    def decode(self, text: str) -> object:
        """Return the value that `encode` turned into *text*."""
        try:
            return self._from_json(json.loads(text))
        except CodecError:
            raise
        except Exception as exc:  # a bad payload: whatever the rebuilding raised
            msg = f"cannot decode a stored value: {type(exc).__name__}: {exc}"
            raise CodecError(msg) from exc

    def _class(self, name: str, check: Callable[[type], bool], what: str) -> type:
        cls = self._types.get(name)
        if cls is None:
            module, _, qualname = name.partition(":")
            found: Any = sys.modules.get(module)
            for part in qualname.split("."):
                found = getattr(found, part, None)
            if not isinstance(found, type):
                msg = (
                    f"cannot decode {what} {name}: its module is not imported (a store is read without"
                    " importing anything); import it first or pass it to JsonCodec(types=...)"
                )
                raise CodecError(msg)
            cls = found
        if not check(cls):
            msg = f"cannot decode {name}: it is not a {what}"
            raise CodecError(msg)
        return cls

    def _from_json(self, data: object) -> object:  # noqa: C901, PLR0911, PLR0912
        if type(data) is list:
            return [self._from_json(item) for item in data]
        if type(data) is not dict:
            return data
        if not data or not next(iter(data)).startswith("$"):
            return {k: self._from_json(v) for k, v in data.items()}
        tag, payload = next(iter(data.items()))
        match tag:
            case "$dict":
                return {self._from_json(k): self._from_json(v) for k, v in payload}
            case "$tuple":
                return tuple(self._from_json(item) for item in payload)
            case "$set":
                return {self._from_json(item) for item in payload}
            case "$frozenset":
                return frozenset(self._from_json(item) for item in payload)
            case "$bytes":
                return base64.b64decode(payload)
            case "$bytearray":
                return bytearray(base64.b64decode(payload))
            case "$datetime":
                return dt.datetime.fromisoformat(payload)
            case "$date":
                return dt.date.fromisoformat(payload)
            case "$time":
                return dt.time.fromisoformat(payload)
            case "$timedelta":
                return dt.timedelta(days=payload[0], seconds=payload[1], microseconds=payload[2])
            case "$decimal":
                return Decimal(payload)
            case "$uuid":
                return uuid.UUID(payload)
            case "$float":
                return float(payload)
            case "$path":
                return PureWindowsPath(payload) if data.get("windows") else _path(payload)
            case "$enum":
                cls = self._class(payload, lambda c: issubclass(c, enum.Enum), "Enum")
                return cls(self._from_json(data["value"]))
            case "$namedtuple":
                cls = self._class(payload, lambda c: issubclass(c, tuple) and hasattr(c, "_fields"), "named tuple")
                return cls(*(self._from_json(v) for v in data["values"]))
            case "$dataclass":
                cls = self._class(payload, dataclasses.is_dataclass, "dataclass")
                return cls(**{k: self._from_json(v) for k, v in data["fields"].items()})
            case "$pydantic":
                cls = self._class(payload, lambda c: hasattr(c, "model_validate"), "pydantic model")
                return cls.model_validate(data["data"])  # type: ignore[attr-defined]
            case "$error":
                return self._rebuild_error(payload)
            case "$custom":
                decoder = self._decoders.get(payload)
                if decoder is None:
                    msg = f"cannot decode {payload}: no decoder for it in JsonCodec(encoders=...)"
                    raise CodecError(msg)
                return decoder(self._from_json(data["value"]))
            case _:
                msg = f"cannot decode a stored value: unknown tag {tag!r}"
                raise CodecError(msg)

    # -- errors -------------------------------------------------------------

    def encode_error(self, error: BaseException) -> str:
        """
        Return *error* as JSON: its class, message and, where they encode, its data.

        Never raises: what can't be encoded is left out.
        """
        return json.dumps(self._error_record(error), separators=(",", ":"))

    def _error_record(self, error: BaseException) -> dict[str, object]:
        record: dict[str, object] = {"type": _qualified(type(error)), "message": error_message(error)}
        try:
            args = error.args
            record["args"] = self._to_json(list(args), "error")
            # Attributes the constructor does not set from the arguments (Skip.output,
            # OSError.filename); those it sets would be rebuilt twice.
            attrs = {k: v for k, v in vars(error).items() if not k.startswith("_") and not _among(v, args)}
            if isinstance(error, OSError):
                attrs |= {k: v for k in ("filename", "filename2") if (v := getattr(error, k)) is not None}
            if attrs:
                record["attrs"] = self._to_json(attrs, "error")
        except Exception:  # noqa: BLE001 - what can't be encoded is left out: never raise here
            record.pop("attrs", None)
        return record

    def decode_error(self, text: str) -> BaseException:
        """Rebuild an error: builtin and choreograph errors by class, others as `StoredError`."""
        try:
            return self._rebuild_error(json.loads(text))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return StoredError("unknown", f"unreadable stored error ({exc})")

    def _rebuild_error(self, record: dict[str, Any]) -> BaseException:
        name: str = record["type"]
        message: str = record.get("message", "")
        module, _, qualname = name.partition(":")
        cls: object = None
        if module == "builtins":
            cls = getattr(builtins, qualname, None)
        elif module.partition(".")[0] == "choreograph":
            cls = getattr(sys.modules.get("choreograph"), qualname, None)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)) or "args" not in record:
            return StoredError(name.replace(":", "."), message)
        try:
            error: BaseException = cls(*self._from_json(record["args"]))  # type: ignore[misc]
            attrs: dict[str, object] = self._from_json(record.get("attrs", {}))  # type: ignore[assignment]
            for key, value in attrs.items():
                setattr(error, key, value)
        except Exception:  # noqa: BLE001 - an error that won't rebuild is still reported
            return StoredError(name.replace(":", "."), message)
        return error


def error_message(error: BaseException) -> str:
    """
    Return ``str(error)``, or a placeholder when that raises.

    >>> error_message(ValueError("bad"))
    'bad'
    """
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the error
        return f"<{type(error).__qualname__}: str() failed>"


def _among(value: object, args: tuple[object, ...]) -> bool:
    return any(value is arg for arg in args)


def _path(text: str) -> PurePath:
    return PurePosixPath(text)


class PickleCodec:
    """
    Pickle everything. Opt-in only.

    Warning:
        Reading a store written with this codec unpickles its contents, which
        can run arbitrary code: use it only with store files that you alone
        write. Pickles also break when the pickled classes change.

    .. versionadded:: 0.1.0
    """

    name = "pickle"

    def encode(self, value: object) -> str:
        """Return *value* pickled, as base64 text."""
        try:
            return base64.b64encode(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")
        except Exception as exc:
            msg = f"cannot pickle a value of type {type(value).__qualname__}: {exc}"
            raise CodecError(msg) from exc

    def decode(self, text: str) -> object:
        """Unpickle *text* (this can run code from the store)."""
        try:
            return pickle.loads(base64.b64decode(text))  # noqa: S301 - the documented opt-in
        except Exception as exc:
            msg = f"cannot unpickle a stored value: {exc}"
            raise CodecError(msg) from exc

    def encode_error(self, error: BaseException) -> str:
        """Pickle *error*; fall back to JSON when it won't pickle."""
        try:
            return "p:" + self.encode(error)
        except CodecError:
            return "j:" + _JSON.encode_error(error)

    def decode_error(self, text: str) -> BaseException:
        """Rebuild an error written by `encode_error`."""
        kind, _, body = text.partition(":")
        if kind == "p":
            try:
                error = self.decode(body)
                if isinstance(error, BaseException):
                    return error
            except CodecError:
                pass
        return _JSON.decode_error(body)


_JSON: Final = JsonCodec()
