"""The stand-ins the codec hands out: placeholders for values that could not travel
(:class:`Unrepresentable`) or could not be rebuilt (:class:`Undecodable`, collected per
thread by :func:`take_undecodable`), values of tags this process does not know
(:class:`UnknownType`), and exceptions of classes that are not builtins
(:class:`RemoteException`)."""

from __future__ import annotations

import dataclasses
import reprlib
import threading
from typing import Any

__all__ = ["RemoteException", "Undecodable", "UnknownType", "Unrepresentable", "take_undecodable"]


@dataclasses.dataclass(frozen=True)
class Unrepresentable:
    """Stands in for a value the codec cannot carry (an open file, a client, ...).

    ``type`` is the qualified type name of the original, ``repr`` a bounded ``repr`` of it.
    """

    type: str
    repr: str


@dataclasses.dataclass(frozen=True)
class UnknownType:
    """A typed value whose tag this process does not know (e.g. a type the sender
    registered and the receiver did not). ``value`` is the decoded payload."""

    tag: str
    value: Any


@dataclasses.dataclass(frozen=True)
class Undecodable(Unrepresentable):
    """Stands in for a value that arrived but could not be rebuilt here: its payload is
    malformed, its class' validation refuses it, or it cannot be what it must be (a
    ``dict`` as a set member or a dict key). The rest of the event is intact.

    ``type`` is the qualified name of the class the value should have been (or its tag),
    ``repr`` a bounded ``repr`` of what arrived, ``reason`` why it could not be rebuilt.
    Being an :class:`Unrepresentable`, ``isinstance(x, Unrepresentable)`` finds both kinds
    of placeholder. Hashable, so it can stand in for a set member or a dict key.
    """

    reason: str


# the placeholders decoding made in this thread, until take_undecodable() collects them
# (decoding runs inside msgspec's one pass, which has no other channel back)
_decoded = threading.local()


def _undecodable(type_name: str, payload: Any, reason: str) -> Undecodable:
    made = Undecodable(type_name, _safe_repr(payload), reason)
    log = getattr(_decoded, "made", None)
    if log is None:
        _decoded.made = [made]
    else:
        log.append(made)
    return made


def take_undecodable() -> list[Undecodable]:
    """The :class:`Undecodable` placeholders decoding made in this thread since the last
    call (a subscriber counts and logs them per frame)."""
    log: list[Undecodable] | None = getattr(_decoded, "made", None)
    if not log:
        return []
    _decoded.made = None
    return log


class RemoteException(Exception):
    """An exception object from the other side whose class is not a builtin.

    Equal to another with the same type name, module and args.
    """

    def __init__(self, type_name: str, module: str, message: str, args: tuple[Any, ...]) -> None:
        super().__init__(*args)
        self.type_name = type_name
        self.module = module
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"RemoteException({self.module}.{self.type_name}: {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteException):
            return NotImplemented
        return (self.type_name, self.module, self.args) == (
            other.type_name,
            other.module,
            other.args,
        )

    def __hash__(self) -> int:
        return hash((self.type_name, self.module))


_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlevel = 3


def _safe_repr(value: Any) -> str:
    try:
        return _repr.repr(value)
    except Exception as exc:  # a broken __repr__ must not break the stream
        return f"<{type(value).__name__} object; repr failed: {type(exc).__name__}>"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)[:200]
    except Exception:
        return "?"
