"""The transport kit: the one retry policy and the one option parser every transport uses."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated

import msgspec
import pytest

from eventbus import ConfigurationError
from eventbus.transports import TransportClosedError, open_transport
from eventbus.transports._docs import FILES, render
from eventbus.transports._docs import main as _docs_main
from eventbus.transports._kit import Positive, Retry, doc, ensure_open, option_table, parse_options


def test_retry_backs_off_with_jitter_up_to_its_cap() -> None:
    retry = Retry(first=0.1, cap=0.4)
    delays = [retry.next_delay() for _ in range(5)]
    bounds = [0.1, 0.2, 0.4, 0.4, 0.4]
    for delay, bound in zip(delays, bounds, strict=True):
        assert delay is not None and bound / 2 <= delay <= bound
    assert retry.failing
    retry.ok()
    assert not retry.failing
    again = retry.next_delay()
    assert again is not None and 0.05 <= again <= 0.1  # afresh after ok()


def test_retry_gives_up_at_its_deadline() -> None:
    assert Retry(deadline=time.monotonic() - 1).next_delay() is None
    assert Retry(limit=0.0).next_delay() is None  # limit counts from the first failure
    unbounded = Retry()
    assert unbounded.deadline() == math.inf
    assert all(unbounded.next_delay() is not None for _ in range(50))


class _Spec(msgspec.Struct, forbid_unknown_fields=True):
    timeout: Positive = 30.0
    persistent: bool = True
    count: int = 3


def test_options_parse_from_query_and_keywords_which_win() -> None:
    spec, kw, query = parse_options(
        _Spec,
        "x",
        "timeout=5&persistent=off&client=a&count=7",
        {"count": 9, "client": "b"},
        "x://host",
        passthrough=frozenset({"client"}),
    )
    assert spec == _Spec(timeout=5.0, persistent=False, count=9)
    assert kw == {"client": "b"} and query == []  # the keyword wins over the query string


@pytest.mark.parametrize(
    ("query", "options"),
    [("bogus=1", {}), ("", {"bogus": 1}), ("timeout=soon", {}), ("timeout=-1", {}),
     ("timeout=nan", {}), ("persistent=maybe", {})],
)  # fmt: skip
def test_bad_options_are_configuration_errors(query: str, options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        parse_options(_Spec, "x", query, options, "x://host")


def test_the_closed_guard_raises_one_error() -> None:
    ensure_open(False, "x")
    with pytest.raises(TransportClosedError):
        ensure_open(True, "x")


def test_the_docs_option_tables_are_the_specs() -> None:
    """docs/*.md option tables are generated (`make docs`): this fails when one drifts."""
    root = Path(__file__).resolve().parent.parent
    stale = []
    for name in FILES:
        text = (root / name).read_text(encoding="utf-8")
        assert "<!-- options: " in text, f"{name} has no generated option table"
        if render(text) != text:
            stale.append(name)
    assert not stale, f"run `make docs`: stale option tables in {stale}"
    assert _docs_main(["--check", "--root", str(root)]) == 0


def test_an_option_table_lists_every_field_with_its_default_and_meaning() -> None:
    class Documented(msgspec.Struct):
        wait: Annotated[Positive, doc("seconds to wait")] = 2.0
        loud: Annotated[bool, doc("say it")] = False
        size: Annotated[int, doc("how big", default="the server's")] = 0

    assert option_table(Documented).splitlines() == [
        "| option | default | meaning |",
        "|---|---|---|",
        "| `wait` | `2` | seconds to wait |",
        "| `loud` | `false` | say it |",
        "| `size` | the server's | how big |",
    ]
    # documented booleans still take a URL's words for true and false
    parsed, _, _ = parse_options(Documented, "x", "loud=yes&wait=0.5", {}, "x://host")
    assert (parsed.loud, parsed.wait) == (True, 0.5)
    with pytest.raises(ConfigurationError):
        parse_options(Documented, "x", "wait=0", {}, "x://host")


@pytest.mark.parametrize(
    "url", ["memory://k?bogus=1", "memory://k?maxlen=-1", "memory://k?retention=0",
            "memory://k?retention=soon"],
)  # fmt: skip
def test_memory_refuses_unknown_and_bad_options(url: str) -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        open_transport(url, "ns")
    assert open_transport("memory://k?maxlen=5", "ns").options.maxlen == 5  # type: ignore[attr-defined]
