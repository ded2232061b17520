"""How durable stores turn values and errors into text: `JsonCodec`, `PickleCodec`, the `Codec` protocol."""

import dataclasses
import datetime as dt
import enum
import json
import math
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from choreograph import (
    CallbackFailure,
    ChoreographError,
    Codec,
    CodecError,
    ExecutionCanceled,
    JobFailed,
    JsonCodec,
    PickleCodec,
    Skip,
    StepError,
    StoredError,
    UnassignableInput,
    UnstorableOutput,
)

# -- types the codec rebuilds by name (module level, so their module is imported) -----


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


class Shape(enum.Enum):
    """An Enum whose values are themselves tagged (a tuple)."""

    SQUARE = (1, 1)
    WIDE = (2, 1)


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float


@dataclasses.dataclass
class Order:
    id: str
    lines: list[Point]
    meta: dict[str, object]


class Pair(NamedTuple):
    left: object
    right: object


class User(BaseModel):
    name: str
    tags: list[str]
    born: dt.date


class Money:
    """A user type, encoded through `JsonCodec(encoders=...)`."""

    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount, self.currency = amount, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.amount, self.currency) == (other.amount, other.currency)

    __hash__ = None  # type: ignore[assignment]


class Opaque:
    """A type no codec knows."""


class MyError(Exception):
    """A user-defined error: stored by name, read back as `StoredError`."""


class MyCanceled(ExecutionCanceled):
    """A user subclass of a choreograph error: not rebuilt either."""


TAGS = (
    "$dict",
    "$tuple",
    "$set",
    "$frozenset",
    "$bytes",
    "$bytearray",
    "$datetime",
    "$date",
    "$time",
    "$timedelta",
    "$decimal",
    "$uuid",
    "$float",
    "$path",
    "$enum",
    "$namedtuple",
    "$dataclass",
    "$pydantic",
    "$error",
    "$custom",
)


def canon(value: object) -> object:  # noqa: PLR0911 - one case per kind of value
    """A hashable, type-exact picture of *value*: equal pictures mean an exact round trip."""
    kind = type(value)
    if kind is float:
        return (float, repr(value))  # tells nan, inf and -0.0 apart
    if kind in (list, tuple) or isinstance(value, tuple):
        return (kind, tuple(canon(item) for item in value))  # type: ignore[attr-defined]
    if kind is dict:
        return (dict, tuple((canon(k), canon(v)) for k, v in value.items()))  # type: ignore[attr-defined]
    if kind in (set, frozenset):
        return (kind, frozenset(canon(item) for item in value))  # type: ignore[attr-defined]
    if kind in (bytes, bytearray):
        return (kind, bytes(value))  # type: ignore[arg-type]
    if kind in (dt.datetime, dt.date, dt.time):
        return (kind, value.isoformat())  # type: ignore[attr-defined]
    if kind is Decimal:
        return (Decimal, str(value))
    if dataclasses.is_dataclass(value):
        return (kind, tuple(canon(getattr(value, f.name)) for f in dataclasses.fields(value)))
    return (kind, value)


# -- strategies ----------------------------------------------------------------------

timezones = st.sampled_from(
    [None, dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8))]
)

hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # nan and infinities included
    st.text(max_size=8),
    st.text(max_size=4).map(lambda s: "$" + s),  # keys and strings that look like tags
    st.sampled_from(TAGS),
    st.binary(max_size=8),
    st.datetimes(timezones=timezones),
    st.dates(),
    st.times(timezones=timezones),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.sampled_from([*Color, *Level, Perm.READ | Perm.WRITE, *Shape]),
    st.builds(PurePosixPath, st.text(alphabet="ab/.", max_size=6)),
    st.builds(
        PureWindowsPath,
        st.sampled_from(["", "C:\\", "\\\\server\\share\\"]),
        st.text(alphabet="ab. ", min_size=1, max_size=4),
    ),
    st.builds(Point, st.integers(), st.floats(allow_nan=False)),
)

leaves = st.one_of(
    hashable_leaves,
    st.binary(max_size=8).map(bytearray),
    st.decimals(),  # NaN, sNaN and infinities included (not hashable: only as values)
)

hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.frozensets(inner, max_size=3),
        st.builds(Pair, inner, inner),
    ),
    max_leaves=6,
)

values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.builds(Pair, inner, inner),
        st.builds(
            Order,
            st.text(max_size=4),
            st.lists(st.builds(Point, st.integers(), st.floats()), max_size=2),
            st.dictionaries(st.text(max_size=4), inner, max_size=2),
        ),
    ),
    max_leaves=20,
)


# -- JsonCodec: values ----------------------------------------------------------------


@settings(deadline=None, max_examples=300)
@given(values)
def test_json_round_trips_nested_supported_values_exactly(value: object):
    """Any nesting of the supported types decodes to an equal value of the same types, through text."""
    codec = JsonCodec()
    text = codec.encode(value)
    assert isinstance(text, str)
    json.loads(text)  # plain, standard JSON
    assert canon(codec.decode(text)) == canon(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**80),
        1.5,
        -0.0,
        math.inf,
        -math.inf,
        "",
        "héllo \u2603 \x00",
        [1, [2, [3]]],
        {"a": 1},
        {},
        {1: "int key", (1, 2): "tuple key", None: "none key", frozenset({3}): "frozenset key"},
        {"$tuple": [1, 2]},
        (1, "two", 3.0),
        (),
        {1, 2, 3},
        frozenset({"a"}),
        set(),
        b"\x00\xff",
        bytearray(b"abc"),
        dt.datetime(2026, 1, 2, 3, 4, 5, 678901),  # noqa: DTZ001 - naive datetimes are supported too
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.date(2026, 1, 2),
        dt.time(23, 59, 59, 999999),
        dt.timedelta(days=-3, seconds=5, microseconds=7),
        Decimal("1.10"),
        Decimal("-0"),
        Decimal("Infinity"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        PurePosixPath("/srv/data/file.txt"),
        PureWindowsPath("C:\\Users\\me"),
        Color.GREEN,
        Level.HIGH,
        Perm.READ | Perm.WRITE,
        Shape.WIDE,
        Point(1, 2.5),
        Order("o-1", [Point(1, 2.0)], {"when": dt.date(2026, 1, 1), "ids": (1, 2)}),
        Pair(Color.RED, (1, 2)),
        User(name="ann", tags=["a", "b"], born=dt.date(1990, 5, 17)),
    ],
    ids=repr,
)
def test_json_round_trips_each_supported_type(value: object):
    """Every supported type comes back equal and of the same type."""
    codec = JsonCodec()
    decoded = codec.decode(codec.encode(value))
    assert type(decoded) is type(value)
    if isinstance(value, BaseModel):
        assert decoded == value
    else:
        assert canon(decoded) == canon(value)


def test_json_round_trips_nan():
    """A float NaN comes back as a float NaN."""
    codec = JsonCodec()
    decoded = codec.decode(codec.encode(math.nan))
    assert type(decoded) is float
    assert math.isnan(decoded)  # type: ignore[arg-type]


def test_json_decodes_a_concrete_path_as_an_equal_pure_path():
    """A `Path` (a PurePath) is stored as its text and comes back as an equal pure path."""
    codec = JsonCodec()
    decoded = codec.decode(codec.encode(Path("/srv/x/y.txt")))
    assert isinstance(decoded, PurePosixPath)
    assert decoded == Path("/srv/x/y.txt")


def test_json_round_trips_an_exception_value():
    """An exception used as a value (not as an error) comes back as the same builtin class."""
    codec = JsonCodec()
    decoded = codec.decode(codec.encode({"last": KeyError("k")}))
    assert isinstance(decoded, dict)
    assert type(decoded["last"]) is KeyError
    assert decoded["last"].args == ("k",)


@settings(deadline=None, max_examples=200)
@given(
    st.dictionaries(
        st.one_of(st.sampled_from(TAGS), st.text(max_size=6), st.text(max_size=6).map(lambda s: "$" + s)),
        st.one_of(st.text(max_size=6), st.integers(), st.lists(st.text(max_size=3), max_size=3)),
        max_size=4,
    )
)
def test_json_user_dicts_are_never_confused_with_tags(value: dict[str, object]):
    """A user dict whose keys look like the codec's tags comes back as that same plain dict."""
    codec = JsonCodec()
    decoded = codec.decode(codec.encode(value))
    assert type(decoded) is dict
    assert decoded == value
    assert list(decoded) == list(value)  # order kept too


@pytest.mark.parametrize(
    "value",
    [
        {"$dataclass": "os:system", "fields": {"command": "echo pwned"}},
        {"$error": {"type": "builtins:ValueError", "message": "x", "args": ["x"]}},
        {"$float": "nan"},
        {"$custom": "tests.test_codec:Money", "value": 1},
        [{"$tuple": [1, 2]}, {"$set": []}],
    ],
)
def test_json_user_data_shaped_like_tagged_objects_stays_plain_data(value: object):
    """Data that mimics the codec's tagged objects is stored as data: it decodes to itself, nothing is rebuilt."""
    codec = JsonCodec()
    assert codec.decode(codec.encode(value)) == value


def test_json_custom_encoders_round_trip_user_types():
    """`JsonCodec(encoders={T: (to_json, from_json)})` stores T via to_json, whose result may hold supported types."""
    seen: list[object] = []

    def from_json(data: object) -> Money:
        seen.append(data)
        amount, currency = data  # type: ignore[misc]
        return Money(amount, currency)

    codec = JsonCodec(encoders={Money: (lambda m: (m.amount, m.currency), from_json)})
    value = {"price": Money(Decimal("9.99"), "EUR"), "all": [Money(Decimal(1), "USD")]}

    decoded = codec.decode(codec.encode(value))

    assert decoded == value
    assert seen == [(Decimal("9.99"), "EUR"), (Decimal(1), "USD")]  # from_json got decoded values


def test_json_custom_type_without_its_decoder_raises_codec_error():
    """Text with a custom type can't be read by a codec that lacks that type's decoder."""
    writer = JsonCodec(encoders={Money: (lambda m: [str(m.amount), m.currency], lambda v: Money(Decimal(v[0]), v[1]))})
    text = writer.encode(Money(Decimal(1), "EUR"))

    with pytest.raises(CodecError, match="Money"):
        JsonCodec().decode(text)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Opaque(), "Opaque"),
        (object(), "object"),
        ([1, {"deep": (Opaque(),)}], "Opaque"),
        ({"a": {Opaque()}}, "Opaque"),
        (lambda: 1, "function"),
        (threading.Lock(), "lock"),
        (Money(Decimal(1), "EUR"), "Money"),  # no encoder given
    ],
    ids=["opaque", "object", "nested", "in-a-set", "function", "lock", "no-encoder"],
)
def test_json_unsupported_types_raise_codec_error_naming_the_type(value: object, type_name: str):
    """A value JSON can't hold raises `CodecError` (a ValueError and ChoreographError) naming its type."""
    with pytest.raises(CodecError, match=type_name) as info:
        JsonCodec().encode(value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ChoreographError)
    assert type_name in info.value.problem


def test_json_self_referencing_values_raise_codec_error():
    """A list that contains itself raises `CodecError`, not RecursionError."""
    value: list[object] = []
    value.append(value)
    with pytest.raises(CodecError, match="list"):
        JsonCodec().encode(value)


@pytest.mark.parametrize(
    "text",
    [
        '{"$nonsense": 1}',
        f'{{"$enum": "{__name__}:NoSuchEnum", "value": 1}}',
        '{"$dataclass": "no_such_module_xyz:Thing", "fields": {}}',
        '{"$namedtuple": "no_such_module_xyz:Thing", "values": []}',
        '{"$pydantic": "no_such_module_xyz:Thing", "data": {}}',
        '{"$dataclass": "builtins:int", "fields": {}}',  # imported, but not a dataclass
        '{"$enum": "os:system", "value": 1}',  # not a class at all
        '{"$enum": "subprocess:Popen", "value": ["ls"]}',  # a class, but not an Enum
        f'{{"$dataclass": "{__name__}:Point", "fields": {{"nope": 1}}}}',  # the right class, wrong fields
        '{"$decimal": "not a number"}',
        '{"$uuid": "xyz"}',
        "not json at all",
        "",
    ],
)
def test_json_decoding_unknown_or_bad_tags_raises_codec_error(text: str):
    """Unknown tags, classes that are not imported or not of the tagged kind, and bad payloads raise `CodecError`."""
    with pytest.raises(CodecError):
        JsonCodec().decode(text)


def test_json_decoding_never_imports_a_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stored class whose module is importable but not imported raises `CodecError`; the module is not imported."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "ghost_module_for_codec_test.py").write_text(
        "import dataclasses, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "@dataclasses.dataclass\n"
        "class Thing:\n"
        "    x: int\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = '{"$dataclass": "ghost_module_for_codec_test:Thing", "fields": {"x": 1}}'

    with pytest.raises(CodecError, match="ghost_module_for_codec_test") as info:
        JsonCodec().decode(text)

    assert "JsonCodec(types=" in str(info.value)
    assert "ghost_module_for_codec_test" not in sys.modules
    assert not marker.exists()


def _ghost(cls: type) -> type:
    """Pretend *cls* lives in a module that is not imported."""
    cls.__module__ = "ghost_module_not_imported"
    return cls


GhostPoint = _ghost(dataclasses.make_dataclass("GhostPoint", [("x", int)]))
GhostColor = _ghost(enum.Enum("GhostColor", ["RED", "BLUE"]))
GhostPair = _ghost(NamedTuple("GhostPair", [("a", int), ("b", int)]))


@pytest.mark.parametrize(
    ("cls", "value"),
    [(GhostPoint, GhostPoint(3)), (GhostColor, GhostColor.BLUE), (GhostPair, GhostPair(1, 2))],  # type: ignore[operator, attr-defined, call-arg]
    ids=["dataclass", "enum", "namedtuple"],
)
def test_json_types_registers_classes_whose_module_is_not_imported(cls: type, value: object):
    """A class of a module that is not imported decodes only with `JsonCodec(types=(cls,))`."""
    text = JsonCodec().encode(value)

    with pytest.raises(CodecError, match="ghost_module_not_imported"):
        JsonCodec().decode(text)
    decoded = JsonCodec(types=(cls,)).decode(text)

    assert type(decoded) is cls
    assert decoded == value


# -- JsonCodec: errors ----------------------------------------------------------------


def _round_trip_error(error: BaseException) -> BaseException:
    codec = JsonCodec()
    text = codec.encode_error(error)
    assert isinstance(text, str)
    return codec.decode_error(text)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad value", 3),
        KeyError("missing"),
        RuntimeError(),
        FileNotFoundError(2, "No such file"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        TimeoutError("slow"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_json_builtin_errors_are_rebuilt_as_their_class(error: BaseException):
    """A builtin error comes back as its own class, with its args and message."""
    decoded = _round_trip_error(error)
    assert type(decoded) is type(error)
    assert decoded.args == error.args
    assert str(decoded) == str(error)


def test_json_oserror_keeps_errno_and_filename():
    """An OSError's errno, strerror and filename survive, so its message is the original one."""
    error = FileNotFoundError(2, "No such file", "/data/in.csv")
    decoded = _round_trip_error(error)
    assert isinstance(decoded, FileNotFoundError)
    assert str(decoded) == str(error)
    assert (decoded.errno, decoded.strerror, decoded.filename) == (2, "No such file", "/data/in.csv")


def test_json_job_failed_is_rebuilt_with_its_error_and_cause():
    """A `JobFailed` comes back with `.step`, its original `.error`, and `__cause__` restored from `.error`."""
    decoded = _round_trip_error(JobFailed("charge", ValueError("card declined")))

    assert type(decoded) is JobFailed
    assert decoded.step == "charge"
    assert type(decoded.error) is ValueError
    assert decoded.error.args == ("card declined",)
    assert decoded.__cause__ is decoded.error
    assert str(decoded) == "job of step 'charge' failed: ValueError: card declined"


def test_json_step_error_is_rebuilt_with_its_error_and_cause():
    """A `StepError` comes back with step, phase, `.error`, and `__cause__` restored from `.error`."""
    decoded = _round_trip_error(StepError("load", "precheck", KeyError("id")))

    assert type(decoded) is StepError
    assert (decoded.step, decoded.phase) == ("load", "precheck")
    assert type(decoded.error) is KeyError
    assert decoded.__cause__ is decoded.error


@pytest.mark.parametrize(
    ("error", "attrs"),
    [
        (ExecutionCanceled("stop it"), {"reason": "stop it"}),
        (UnassignableInput("s", "job", "int", "str"), {"step": "s", "expected": "int", "actual": "str"}),
        (UnstorableOutput("s", "job", "Opaque", "nope"), {"step": "s", "type_name": "Opaque", "problem": "nope"}),
        (CallbackFailure({"code": 7}), {"value": {"code": 7}}),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, BaseException) else "",
)
def test_json_choreograph_errors_are_rebuilt_with_their_attributes(error: BaseException, attrs: dict[str, object]):
    """Choreograph's own errors come back as their class, with their attributes and message."""
    decoded = _round_trip_error(error)
    assert type(decoded) is type(error)
    assert str(decoded) == str(error)
    for name, value in attrs.items():
        assert getattr(decoded, name) == value


def test_json_skip_keeps_its_output():
    """A `Skip` with an output comes back with `has_output` and the same output."""
    decoded = _round_trip_error(Skip("already done", output=("cached", Decimal("1.5"))))
    assert type(decoded) is Skip
    assert decoded.reason == "already done"
    assert decoded.has_output
    assert decoded.output == ("cached", Decimal("1.5"))


def test_json_skip_without_output_has_none():
    """A `Skip` without an output comes back without one."""
    decoded = _round_trip_error(Skip("not today"))
    assert type(decoded) is Skip
    assert not decoded.has_output


@pytest.mark.parametrize("error", [MyError("boom", 42), MyCanceled("user subclass")], ids=["user", "user-subclass"])
def test_json_user_errors_come_back_as_stored_error(error: Exception):
    """A user-defined error comes back as `StoredError` with its `module.QualName` and message."""
    decoded = _round_trip_error(error)
    assert type(decoded) is StoredError
    assert isinstance(decoded, ChoreographError)
    assert decoded.type_name == f"{type(error).__module__}.{type(error).__qualname__}"
    assert decoded.type_name.endswith(f"test_codec.{type(error).__name__}")
    assert decoded.message == str(error)
    assert str(decoded) == f"{decoded.type_name}: {error}"


def test_json_job_failed_wrapping_a_user_error_holds_a_stored_error():
    """A `JobFailed` around a user error is rebuilt; its `.error` is a `StoredError` naming the user class."""
    decoded = _round_trip_error(JobFailed("step", MyError("inner")))
    assert type(decoded) is JobFailed
    assert isinstance(decoded.error, StoredError)
    assert decoded.error.type_name.endswith("MyError")
    assert decoded.error.message == "inner"


def test_json_error_with_unencodable_args_is_stored_by_name_and_message():
    """An error whose args JSON can't hold is still stored: it comes back as `StoredError` with its message."""
    error = ValueError(Opaque())
    decoded = _round_trip_error(error)
    assert type(decoded) is StoredError
    assert decoded.type_name == "builtins.ValueError"
    assert decoded.message == str(error)


def test_json_encode_error_never_raises_even_when_str_fails():
    """`encode_error` never raises: an error whose `str()` raises is still encoded, and decodes to an error."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    codec = JsonCodec()
    text = codec.encode_error(Unprintable())
    assert isinstance(codec.decode_error(text), BaseException)


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"no": "type"}', "null"])
def test_json_decode_error_of_garbage_is_a_stored_error(text: str):
    """An unreadable stored error decodes to a `StoredError` instead of raising."""
    decoded = JsonCodec().decode_error(text)
    assert type(decoded) is StoredError


# -- PickleCodec and the protocol --------------------------------------------------------


def test_pickle_round_trips_anything_picklable():
    """`PickleCodec` round-trips arbitrary picklable values, including types JSON can't hold."""
    codec = PickleCodec()
    value = {"opaque_type": Opaque, "money": Money(Decimal("2.5"), "EUR"), "nested": [{1, 2}, (Point(1, 2.0),)]}
    text = codec.encode(value)
    assert isinstance(text, str)
    assert text.isascii()
    assert codec.decode(text) == value


def test_pickle_unpicklable_values_raise_codec_error_naming_the_type():
    """An unpicklable value raises `CodecError` naming its type."""
    with pytest.raises(CodecError, match="function"):
        PickleCodec().encode(lambda: None)


def test_pickle_decoding_garbage_raises_codec_error():
    """Text that isn't a pickle raises `CodecError`."""
    with pytest.raises(CodecError):
        PickleCodec().decode("definitely not base64 pickle!")


def test_pickle_round_trips_user_errors_as_their_class():
    """`PickleCodec` rebuilds a picklable user error as its own class."""
    codec = PickleCodec()
    decoded = codec.decode_error(codec.encode_error(MyError("boom", 1)))
    assert type(decoded) is MyError
    assert decoded.args == ("boom", 1)


def test_pickle_falls_back_to_json_for_unpicklable_errors():
    """An error that won't pickle is still stored (as JSON) and comes back as a `StoredError` with its message."""

    class Locked(Exception):
        def __init__(self) -> None:
            super().__init__("locked")
            self.lock = threading.Lock()

    codec = PickleCodec()
    decoded = codec.decode_error(codec.encode_error(Locked()))
    assert type(decoded) is StoredError
    assert decoded.message == "locked"
    assert decoded.type_name.endswith("Locked")


@pytest.mark.parametrize("codec", [JsonCodec(), PickleCodec()], ids=["json", "pickle"])
def test_codecs_implement_the_codec_protocol(codec: object):
    """Both built-in codecs are `Codec`s, with distinct names."""
    assert isinstance(codec, Codec)
    assert codec.name in {"json", "pickle"}  # type: ignore[attr-defined]


def test_objects_missing_codec_methods_are_not_codecs():
    """An object without the protocol's methods is not a `Codec`."""
    assert not isinstance(object(), Codec)
    assert not isinstance(json, Codec)


class UserCodec:
    """A codec of the user's own: JSON text, errors kept by message only."""

    name = "user"

    def encode(self, value: object) -> str:
        return json.dumps(value)

    def decode(self, text: str) -> object:
        return json.loads(text)

    def encode_error(self, error: BaseException) -> str:
        return json.dumps(str(error))

    def decode_error(self, text: str) -> BaseException:
        return StoredError("user", json.loads(text))


def test_a_user_codec_satisfies_the_protocol():
    """Any object with `name`, `encode`, `decode`, `encode_error` and `decode_error` is a `Codec`."""
    assert isinstance(UserCodec(), Codec)
