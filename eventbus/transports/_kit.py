"""What every transport shares: the retry policy, URL option parsing (and the option
tables of the docs, generated from the same specs), the checks of group options and names,
and the closed guard.

One of each, so that the transports differ only in how they talk to their broker.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, get_args, get_origin
from urllib.parse import parse_qsl

import msgspec
from msgspec import inspect as msgspec_inspect

from .._exceptions import ConfigurationError, TransportClosedError
from ._base import GroupOptions

__all__ = [
    "Positive",
    "PositiveInt",
    "Retry",
    "RetryOptions",
    "check_consumer",
    "describe",
    "doc",
    "ensure_open",
    "option_table",
    "parse_options",
]

_S = TypeVar("_S", bound=msgspec.Struct)

# option value types for the transports' option specs
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


def doc(meaning: str, *, default: str | None = None) -> msgspec.Meta:
    """An option's line in the docs' option table: ``meaning``, and ``default`` when the
    field's default value would not say it (``Annotated[Positive, doc("...")] = 30.0``)."""
    return msgspec.Meta(description=meaning, extra={} if default is None else {"default": default})


def option_table(spec: type[msgspec.Struct]) -> str:
    """The Markdown table of an option spec (option, default, meaning), for the docs."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    info = msgspec_inspect.type_info(spec)
    assert isinstance(info, msgspec_inspect.StructType)
    for field in info.fields:
        meta = field.type if isinstance(field.type, msgspec_inspect.Metadata) else None
        meaning = (meta.extra_json_schema or {}).get("description", "") if meta else ""
        shown = (meta.extra or {}).get("default") if meta else None
        if shown is None:
            shown = f"`{_shown(field.default)}`"
        rows.append(f"| `{field.name}` | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bare(tp: Any) -> Any:
    """A field's type without its ``Annotated`` constraints and docs."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


#: the option of how long one call to the broker keeps retrying (an absolute Retry deadline)
PublishTimeout = Annotated[
    Positive,
    doc(
        "seconds `publish()` keeps reconnecting and re-publishing before `PublishError`; "
        "`ack()`, `reject()` and the operations (`dead_letters()`, `groups()`...) retry as "
        "long before `ConnectError`"
    ),
]
#: the option of how long a long-running loop keeps reconnecting (a Retry limit)
ReconnectTimeout = Annotated[
    Positive, doc("seconds `follow()`/`consume()` keep reconnecting before raising `ConnectError`")
]


class RetryOptions(msgspec.Struct, forbid_unknown_fields=True):
    """The retry options every broker transport shares, first in its option spec (and its
    option table): the deadlines its :class:`Retry` policies are built with. A transport
    keeps the declaration and changes a default by redeclaring the field with the same
    type alias."""

    publish_timeout: PublishTimeout = 30.0
    reconnect_timeout: ReconnectTimeout = 120.0


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Retry:
    """The one retry policy: exponential backoff with jitter, bounded by a deadline.

    The deadline is either absolute (``deadline``, in :func:`time.monotonic` time) or
    ``limit`` seconds after the first failure of the current outage (a long-running loop:
    :meth:`ok` ends the outage). Jitter keeps many clients from retrying in lockstep after
    a broker restart. Given a ``log``, it writes one line when an outage begins and one when
    it ends (never one per attempt: a broker that stays away must not flood the log).
    """

    __slots__ = ("_cap", "_deadline", "_first", "_limit", "_log", "_next", "_since", "what")

    def __init__(
        self,
        *,
        limit: float = math.inf,
        deadline: float | None = None,
        first: float = 0.05,
        cap: float = 2.0,
        what: str = "",
        log: logging.Logger | None = None,
    ) -> None:
        self.what = what
        self._log = log
        self._limit = limit
        self._deadline = deadline
        self._first = first
        self._cap = cap
        self._next = first
        self._since: float | None = None

    @property
    def failing(self) -> bool:
        """True between a failure and the next :meth:`ok`."""
        return self._since is not None

    @property
    def since(self) -> float | None:
        """When the current outage began (monotonic time), if there is one."""
        return self._since

    def deadline(self) -> float:
        """When retrying gives up: the absolute deadline, or ``limit`` after the outage
        began (or from now, when there is none yet)."""
        if self._deadline is not None:
            return self._deadline
        return (self._since if self._since is not None else time.monotonic()) + self._limit

    def next_delay(self, exc: BaseException | None = None) -> float | None:
        """Note a failure; the pause before the next attempt, or None when that attempt
        would begin past the deadline (give up)."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
            if self._log is not None:
                self._log.warning("%s failed (%s); retrying", self.what, describe(exc))
        value = self._next
        self._next = min(self._cap, self._next * 2)
        delay = random.uniform(value / 2, value)
        if now + delay > self.deadline():
            return None
        return delay

    def ok(self) -> None:
        """The operation succeeded: the outage is over, the backoff starts afresh."""
        if self._since is not None and self._log is not None:
            self._log.info("%s: recovered after %.1fs", self.what, time.monotonic() - self._since)
        self._since = None
        self._next = self._first


def describe(exc: BaseException | None) -> str:
    """An exception as ``Type: message``, for log lines and error messages."""
    return "?" if exc is None else f"{type(exc).__name__}: {exc}"


def ensure_open(closed: bool, what: str) -> None:
    """The closed guard of every transport.

    Raises:
        TransportClosedError: ``closed`` is true.
    """
    if closed:
        raise TransportClosedError(f"the {what} transport is closed")


def check_consumer(group: str, consumer: str, options: GroupOptions) -> None:
    """Validate a ``consume`` call's names and group options (every transport, once).

    Raises:
        ConfigurationError: a bad name, or options out of range.
    """
    from . import check_name  # the package imports this module

    check_name("group", group)
    check_name("consumer", consumer)
    if options.start not in ("first", "new"):
        raise ConfigurationError(f"group start must be 'first' or 'new', got {options.start!r}")
    if options.prefetch < 1 or options.max_deliveries < 1:
        raise ConfigurationError("prefetch and max_deliveries must be >= 1")
    if not options.visibility_timeout > 0:
        raise ConfigurationError("visibility_timeout must be > 0")


def parse_options(
    spec: type[_S],
    scheme: str,
    query: str,
    options: Mapping[str, Any],
    safe_url: str,
    *,
    passthrough: frozenset[str] = frozenset(),
) -> tuple[_S, dict[str, Any], list[tuple[str, str]]]:
    """Parse a URL's query string and keyword options into ``spec``, a msgspec Struct whose
    fields are the transport's options (with their defaults and constraints).

    Keyword options win over the query string. Options named in ``passthrough`` belong to
    the broker client; they are returned apart: ``(parsed, passthrough keyword options,
    passthrough query items)``.

    Raises:
        ConfigurationError: an unknown option, or a value the spec refuses.
    """
    try:
        items = parse_qsl(query, keep_blank_values=True)
    except ValueError as exc:
        raise ConfigurationError(f"malformed {scheme}:// URL {safe_url!r}: {exc}") from None
    fields = set(spec.__struct_fields__)
    mine: dict[str, Any] = {}
    passed_kw: dict[str, Any] = {}
    passed_query: list[tuple[str, str]] = []
    unknown: list[str] = []
    for name, value in items:
        if name in fields:
            mine[name] = value
        elif name in passthrough:
            passed_query.append((name, value))
        else:
            unknown.append(name)
    for name, value in options.items():
        if name in fields:
            mine[name] = value
        elif name in passthrough:
            passed_kw[name] = value
        else:
            unknown.append(name)
    if unknown:
        known = ", ".join(sorted(fields | passthrough))
        raise ConfigurationError(
            f"unknown {scheme}:// option(s) {', '.join(sorted(set(unknown)))} "
            f"in {safe_url!r}; known: {known}"
        )
    passed_query = [(name, value) for name, value in passed_query if name not in passed_kw]
    booleans = {f.name for f in msgspec.structs.fields(spec) if _bare(f.type) is bool}
    for name in booleans & set(mine):
        value = mine[name]
        if isinstance(value, str):
            # the words a URL uses for booleans, beyond msgspec's true/false/1/0
            lowered = value.strip().lower()
            if lowered in _TRUE or lowered in _FALSE:
                mine[name] = lowered in _TRUE
    try:
        parsed = msgspec.convert(mine, spec, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"bad {scheme}:// option in {safe_url!r}: {exc}") from None
    return parsed, passed_kw, passed_query
