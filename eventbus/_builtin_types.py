"""The builtin types' side of the codec: how ``tuple``, ``set``, ``bytes``, dates, UUIDs,
``Decimal``, big ints, exceptions and the placeholders are reduced to a tag and a payload,
and rebuilt from one (checking the payload's shape: it comes from the message).

:func:`install_builtins` puts them in the registry (``eventbus._codec`` calls it once); the
walkers and the node decoding that use them stay in the compiled ``eventbus._codec``. These
run once per node of such a type only, so they are not compiled.
"""

from __future__ import annotations

import base64
import builtins
import datetime as _dt
import decimal
import uuid
from typing import Any

from ._exceptions import DecodeError
from ._registry import (
    Decoder,
    Reducer,
    _add,
    _builtin_tags,
    _decoders,
    _Reduced,
    _reducers,
    qualname,
)
from ._values import (
    RemoteException,
    Undecodable,
    UnknownType,
    Unrepresentable,
    _safe_repr,
    _undecodable,
)

__all__ = ["MAX_INT_DIGITS", "builtin_exception", "install_builtins", "placeholder"]

# the most decimal digits of an "int" node: Python's default int <-> str limit
# (sys.get_int_max_str_digits()), sign not counted; an encoder sends no longer ones
MAX_INT_DIGITS = 4300


def placeholder(value: Any) -> Unrepresentable:
    """The :class:`Unrepresentable` that stands in for ``value``."""
    return Unrepresentable(qualname(type(value)), _safe_repr(value))


def builtin_exception(name: str) -> type[BaseException]:
    """The builtin exception class called ``name`` (``KeyError``: a name from the message,
    looked up among builtin exception classes only).

    Raises:
        KeyError: no builtin exception class has that name.
    """
    return _BUILTIN_EXCEPTIONS[name]


# encoding (what the walkers call for these types)


def _placeholder(value: Any) -> _Reduced:
    return _Reduced("unrepresentable", [qualname(type(value)), _safe_repr(value)])


def _reduce_exception(exc: BaseException) -> _Reduced:
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = _safe_repr(exc)
    return _Reduced("exception", [cls.__module__, cls.__qualname__, message, list(exc.args)])


def _reduce_big_int(value: int) -> _Reduced:
    # beyond MAX_INT_DIGITS no receiver reads it (whatever this process' own
    # sys.get_int_max_str_digits() allows): a placeholder saying how big it was
    try:
        text = str(value)
        if len(text) - (value < 0) <= MAX_INT_DIGITS:
            return _Reduced("int", text)
    except ValueError:
        pass
    digits = int(value.bit_length() * 0.30103) + 1
    return _Reduced("unrepresentable", ["builtins.int", f"<int of about {digits} digits>"])


# decoding


def _hashable(value: Any, where: str) -> Any:
    try:
        hash(value)
        return value
    except Exception:
        return _undecodable(
            qualname(type(value)),
            value,
            f"a {type(value).__name__} cannot be a {where} (unregistered models and "
            "dataclasses arrive as dicts)",
        )


def _set_of(cls: type[set[Any]] | type[frozenset[Any]]) -> Decoder:
    def decode(payload: Any, extra: Any) -> Any:
        items = _list(payload)
        try:
            return cls(items)
        except TypeError:  # an unhashable member: a placeholder for it, not for the set
            return cls([_hashable(v, "set member") for v in items])

    return decode


def _list(payload: Any) -> list[Any]:
    if type(payload) is not list:
        raise DecodeError("payload must be an array")
    return payload


def _str(payload: Any) -> str:
    if type(payload) is not str:
        raise DecodeError("payload must be a string")
    return payload


def _bytes(payload: Any) -> bytes:
    if type(payload) is bytes:
        return payload
    if type(payload) is str:  # JSON carries bytes as base64
        return base64.b64decode(payload, validate=True)
    raise DecodeError("bytes payload must be binary or base64")


def _pairs(payload: Any, extra: Any) -> dict[Any, Any]:
    pairs = _list(payload)
    for pair in pairs:
        if type(pair) is not list or len(pair) != 2:
            raise DecodeError("'dict' payload must be [key, value] pairs")
    try:
        return {k: v for k, v in pairs}
    except TypeError:  # an unhashable key: a placeholder for it, not for the dict
        return {_hashable(k, "dict key"): v for k, v in pairs}


_BUILTIN_EXCEPTIONS: dict[str, type[BaseException]] = {
    name: obj
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == "builtins"
}


def _exception(payload: Any, extra: Any) -> BaseException:
    module, name, message, args = _list(payload)
    if not (type(module) is str and type(name) is str and type(message) is str):
        raise DecodeError("malformed exception value")
    args = tuple(_list(args))
    cls = _BUILTIN_EXCEPTIONS.get(name) if module == "builtins" else None
    if cls is not None:
        try:
            return cls(*args)
        except Exception:  # some builtin exceptions insist on particular args
            pass
    return RemoteException(name, module, message, args)


def _unrepresentable(payload: Any, extra: Any) -> Unrepresentable:
    type_name, text = _list(payload)
    return Unrepresentable(_str(type_name), _str(text))


def _big_int(payload: Any, extra: Any) -> int:
    text = _str(payload)
    # int() of a huge string is quadratic: refuse forged giants
    if len(text) - (text[:1] in ("-", "+")) > MAX_INT_DIGITS:
        raise DecodeError(f"integer longer than {MAX_INT_DIGITS} digits")
    return int(text)


def _undecodable_node(payload: Any, extra: Any) -> Undecodable:
    type_name, text, reason = _list(payload)
    return Undecodable(_str(type_name), _str(text), _str(reason))


def _surrogate_str(payload: Any, extra: Any) -> str:
    return _bytes(payload).decode("utf-8", "surrogatepass")


def install_builtins() -> None:
    """Register the builtin types' tags in the registry (the codec does it once, when it
    is imported)."""

    def add(cls: type, tag: str, reduce: Reducer, decode: Decoder) -> None:
        _add(cls, tag, reduce, decode, builtin=True)

    add(tuple, "tuple", lambda v: _Reduced("tuple", list(v)), lambda p, x: tuple(_list(p)))
    add(set, "set", lambda v: _Reduced("set", list(v)), _set_of(set))
    add(frozenset, "frozenset", lambda v: _Reduced("frozenset", list(v)), _set_of(frozenset))
    add(bytes, "bytes", lambda v: _Reduced("bytes", v), lambda p, x: _bytes(p))
    add(
        bytearray,
        "bytearray",
        lambda v: _Reduced("bytearray", bytes(v)),
        lambda p, x: bytearray(_bytes(p)),
    )
    add(uuid.UUID, "uuid", lambda v: _Reduced("uuid", str(v)), lambda p, x: uuid.UUID(_str(p)))
    add(
        _dt.datetime,
        "datetime",
        lambda v: _Reduced("datetime", v.isoformat()),
        lambda p, x: _dt.datetime.fromisoformat(_str(p)),
    )
    add(
        _dt.date,
        "date",
        lambda v: _Reduced("date", v.isoformat()),
        lambda p, x: _dt.date.fromisoformat(_str(p)),
    )
    add(
        _dt.time,
        "time",
        lambda v: _Reduced("time", v.isoformat()),
        lambda p, x: _dt.time.fromisoformat(_str(p)),
    )
    add(
        _dt.timedelta,
        "timedelta",
        lambda v: _Reduced("timedelta", [v.days, v.seconds, v.microseconds]),
        lambda p, x: _dt.timedelta(*(int(n) for n in _list(p))),
    )
    add(
        decimal.Decimal,
        "decimal",
        lambda v: _Reduced("decimal", str(v)),
        lambda p, x: decimal.Decimal(_str(p)),
    )
    add(
        Unrepresentable,
        "unrepresentable",
        lambda v: _Reduced("unrepresentable", [v.type, v.repr]),
        _unrepresentable,
    )
    add(
        Undecodable,
        "undecodable",
        lambda v: _Reduced("undecodable", [v.type, v.repr, v.reason]),
        _undecodable_node,
    )
    add(
        RemoteException,
        "exception",
        lambda v: _Reduced("exception", [v.module, v.type_name, v.message, list(v.args)]),
        _exception,
    )
    # an unknown value is passed on under its own tag, for a process that knows it
    _reducers[UnknownType] = lambda v: _Reduced(v.tag, v.value)
    _decoders["int"] = _big_int
    _decoders["dict"] = _pairs
    _decoders["str"] = _surrogate_str  # (sent only for strings UTF-8 cannot carry)
    _builtin_tags.update({"int", "dict", "str"})
