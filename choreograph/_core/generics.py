"""
Type arguments at run time: ``Step[int]`` and ``Coordinator[Rec]``, and what a ``Context[X]`` may be given.

``Coordinator[Rec](steps)`` is a call of a typing alias, which sets the
instance's ``__orig_class__`` only after ``__init__`` returned: too late for
the steps given to the constructor. `InputAlias` hands its type argument to
``__init__`` through a context variable instead (`declared_input`). And on
Python 3.11 and 3.12, a frozen slots dataclass can't take ``__orig_class__``
(the dataclass's ``__setattr__`` raises ``TypeError``, which typing lets
through): `PlainAlias` makes ``Step[int](...)`` a plain call.

Both aliases are the alias typing made, with its class swapped for a subclass
(its layout is the same), so ``get_origin``, ``get_args``, equality, pickling
and substitution behave as typing's own.
"""

from __future__ import annotations

import typing
from contextvars import ContextVar
from types import NoneType, UnionType
from typing import Annotated, Any, Final, TypeVar, Union, get_args, get_origin

#: typing's class of ``UserGeneric[X]`` aliases (private, but the same from 3.11 to 3.13).
_GenericAlias: Any = getattr(typing, "_GenericAlias")  # noqa: B009 - not in typeshed

#: The alias a coordinator is being made through, while its ``__init__`` runs.
_making: ContextVar[Any] = ContextVar("choreograph_making", default=None)


class PlainAlias(_GenericAlias, _root=True):  # type: ignore[misc,call-arg]  # typing admits its own subclasses
    """An alias whose call makes a plain instance, without ``__orig_class__``."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.__origin__(*args, **kwargs)


class InputAlias(_GenericAlias, _root=True):  # type: ignore[misc,call-arg]
    """An alias whose call tells the instance's ``__init__`` its type arguments (see `declared_input`)."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        token = _making.set(self)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _making.reset(token)


def subscript(alias: object, kind: type) -> Any:
    """Give *alias* (what ``Generic.__class_getitem__`` returned) the class *kind*, and return it."""
    # pragma: no mutate start - Generic.__class_getitem__ returns a typing alias; setting its class again is a no-op
    if isinstance(alias, _GenericAlias) and type(alias) is not kind:
        alias.__class__ = kind
    # pragma: no mutate end
    return alias


#: What `declared_input` returns when a class's type argument is not known.
UNKNOWN: Final = object


def declared_input(instance: object, root: type) -> object:
    """
    Return the type argument of *root*'s one parameter for *instance*, or `UNKNOWN`.

    Call it first thing in ``root.__init__``. The argument comes from the
    `InputAlias` being called (``Coordinator[Rec]()``, ``Flow[Rec]()``), else
    from the class's bases (``class Flow(Coordinator[Rec])``).
    """
    cls = type(instance)
    alias = _making.get()
    args: tuple[object, ...] | None = None  # pragma: no mutate - only its truth is read: any falsy start is the same
    if alias is not None and alias.__origin__ is cls:
        _making.set(None)  # consumed: a coordinator made inside this `__init__` has its own
        args = alias.__args__
    return _argument(cls, root, args)


def _argument(cls: type, root: type, args: tuple[object, ...] | None) -> object:
    if cls is root:
        return args[0] if args else UNKNOWN
    # pragma: no mutate start - every Generic subclass has __parameters__; strict=False is zip's default
    mapping = dict(zip(getattr(cls, "__parameters__", ()), args or (), strict=False))
    # pragma: no mutate end
    for base in vars(cls).get("__orig_bases__", ()):
        origin = get_origin(base)
        if isinstance(origin, type) and issubclass(origin, root):
            params = getattr(base, "__parameters__", ())  # pragma: no mutate - a typing alias always has __parameters__
            # `class Flow(Coordinator[list[T]])` made as `Flow[int]()`: substitute.
            given = base[tuple(mapping.get(param, param) for param in params)] if params else base
            return _argument(origin, root, get_args(given))
    parent = next(base for base in cls.__mro__[1:] if issubclass(base, root))  # `class Flow(Coordinator)`
    return _argument(parent, root, None)


def is_known(hint: object) -> bool:
    """
    Tell whether *hint* says something about a value: not `Any`, `object`, or a type variable.

    >>> is_known(int), is_known(list[int]), is_known(object), is_known(Any), is_known(list[TypeVar("T")])
    (True, True, False, False, False)
    """
    if hint is Any or hint is object or isinstance(hint, TypeVar | str | typing.ForwardRef):
        return False
    return isinstance(hint, type) or not getattr(hint, "__parameters__", ())  # pragma: no mutate - not None is not ()


def _members(hint: object) -> tuple[object, ...]:
    if get_origin(hint) is Annotated:
        return _members(get_args(hint)[0])
    if get_origin(hint) in (Union, UnionType):
        return tuple(member for arg in get_args(hint) for member in _members(arg))
    return (NoneType if hint is None else hint,)  # pragma: no mutate - typing turns None into NoneType in every alias


#: `float` accepts an `int` and `complex` both, as type checkers read them (PEP 484's numeric tower).
_TOWER: Final = {float: (int,), complex: (int, float)}


def accepts(wanted: object, given: object) -> bool:
    """
    Tell whether a value of type *given* may be where *wanted* is declared; True when unsure.

    Classes are compared with ``issubclass``, parametrized generics by their
    origins; what can't be compared that way (``Literal``, protocols,
    ``TypedDict``, ``NewType``) is accepted.

    >>> class Base: ...
    >>> class Derived(Base): ...
    >>> accepts(Base, Derived), accepts(Derived, Base), accepts(int | None, int), accepts(int, int | None)
    (True, False, True, False)
    >>> accepts(list[str], list[int]), accepts(dict[str, int], list[int]), accepts(float, int)
    (True, False, True)
    """
    if not is_known(wanted) or not is_known(given) or wanted == given:
        return True
    givens, wanteds = _members(given), _members(wanted)
    if len(givens) > 1:
        return all(accepts(wanted, one) for one in givens)
    if len(wanteds) > 1:
        return any(accepts(one, given) for one in wanteds)
    return _subclass(_class_of(givens[0]), _class_of(wanteds[0]))


def _subclass(given: type | None, wanted: type | None) -> bool:
    if given is None or wanted is None or issubclass(given, _TOWER.get(wanted, ())):  # a bool is an int
        return True
    try:
        return issubclass(given, wanted)
    except TypeError:  # a protocol with data members, a TypedDict: can't tell
        return True


def _class_of(hint: object) -> type | None:
    """The class of a plain class or a parametrized generic (``list[int]``: ``list``), else None."""
    origin = get_origin(hint)
    if origin is None:
        return hint if isinstance(hint, type) else None
    return origin if isinstance(origin, type) else None
