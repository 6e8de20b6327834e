"""``assert_same(a, b)``: deep equality *and* exact types, for codec round trips.

``a == b`` is not enough to say that a value survived the wire: ``1 == 1.0 == True``,
``(1,) != [1]`` but ``{1: x} == {True: x}``, ``0.0 == -0.0``, ``Decimal("1.0") ==
Decimal("1.00")``, two aware datetimes in different zones are equal when they are the
same instant, and a pydantic model compares equal to a copy of another class with the
same fields. This walks both values together and fails with the path of the first
difference::

    from _same import assert_same

    assert_same(from_wire(to_wire(value)), value)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import math
from typing import Any

import pydantic

__all__ = ["assert_same"]


def assert_same(a: Any, b: Any, path: str = "value") -> None:
    """Fail unless ``a`` and ``b`` are equal, recursively, with exactly the same types.

    Compared: dict keys (type and order) and values; list, tuple, set and frozenset
    elements; pydantic models' ``__dict__``, ``__pydantic_extra__`` and
    ``__pydantic_private__``; dataclass fields; exceptions' type and ``args`` (and a
    ``RemoteException``'s type name, module and message); floats by value and sign
    (NaN equals NaN); ``Decimal`` by its exact text; dates and times also by ``tzinfo``
    offset and ``fold``.
    """
    ta, tb = type(a), type(b)
    assert ta is tb, f"{path}: type {_name(ta)} != {_name(tb)} ({a!r} vs {b!r})"
    if ta is float:
        _same_float(a, b, path)
    elif isinstance(a, BaseException):
        _same_exception(a, b, path)
    elif isinstance(a, pydantic.BaseModel):
        _same_model(a, b, path)
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        _same_dataclass(a, b, path)
    elif isinstance(a, dict):
        _same_dict(a, b, path)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)} ({a!r} vs {b!r})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, (set, frozenset)):
        _same_set(a, b, path)
    elif isinstance(a, decimal.Decimal):
        assert str(a) == str(b), f"{path}: Decimal {a!s} != {b!s}"
    elif isinstance(a, (dt.datetime, dt.time)):
        assert a == b, f"{path}: {a!r} != {b!r}"
        assert a.utcoffset() == b.utcoffset(), f"{path}: offset {a!r} vs {b!r}"
        assert a.tzinfo == b.tzinfo, f"{path}: tzinfo {a.tzinfo!r} != {b.tzinfo!r}"
        assert a.fold == b.fold, f"{path}: fold {a.fold} != {b.fold}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
        if isinstance(a, str):  # str subclasses may carry state (TextAccessor does not)
            assert vars(a) == vars(b) if hasattr(a, "__dict__") else True, path


def _name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def _same_float(a: float, b: float, path: str) -> None:
    if math.isnan(a):
        assert math.isnan(b), f"{path}: nan != {b!r}"
        return
    assert a == b, f"{path}: {a!r} != {b!r}"
    assert math.copysign(1.0, a) == math.copysign(1.0, b), f"{path}: sign {a!r} vs {b!r}"


def _same_exception(a: BaseException, b: BaseException, path: str) -> None:
    assert_same(a.args, b.args, f"{path}.args")
    for attr in ("type_name", "module", "message"):  # RemoteException
        if hasattr(a, attr) or hasattr(b, attr):
            assert_same(getattr(a, attr, None), getattr(b, attr, None), f"{path}.{attr}")


def _same_model(a: pydantic.BaseModel, b: pydantic.BaseModel, path: str) -> None:
    assert_same(a.__dict__, b.__dict__, f"{path}.__dict__")
    assert_same(a.__pydantic_extra__, b.__pydantic_extra__, f"{path}.__pydantic_extra__")
    assert_same(
        a.__pydantic_private__ or None,
        b.__pydantic_private__ or None,
        f"{path}.__pydantic_private__",
    )


def _same_dataclass(a: Any, b: Any, path: str) -> None:
    for f in dataclasses.fields(a):
        assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    if hasattr(a, "__dict__"):
        assert_same(vars(a), vars(b), f"{path}.__dict__")


def _same_dict(a: dict[Any, Any], b: dict[Any, Any], path: str) -> None:
    assert len(a) == len(b), f"{path}: {len(a)} keys != {len(b)} ({a!r} vs {b!r})"
    # equal keys of different types (1, 1.0, True) are the same dict slot: compare the
    # keys themselves, in order (the codec keeps insertion order)
    for i, (ka, kb) in enumerate(zip(a, b, strict=True)):
        assert_same(ka, kb, f"{path}.keys()[{i}]")
        assert_same(a[ka], b[kb], f"{path}[{ka!r}]")


def _same_set(a: Any, b: Any, path: str) -> None:
    assert len(a) == len(b), f"{path}: {len(a)} elements != {len(b)} ({a!r} vs {b!r})"
    stored = {x: x for x in b}  # the element b holds for each value (1 vs True vs 1.0)
    for x in a:
        assert x in stored, f"{path}: {x!r} missing from {b!r}"
        assert_same(x, stored[x], f"{path}{{{x!r}}}")
