"""The codec's slow paths, for the rare value the fast walk or the encoder refused: a tree
the MessagePack or JSON encoder refused is repaired (strings with lone surrogates become
exact ``str`` nodes, anything else still refused an ``unrepresentable`` node, value by
value; ``eventbus._codec`` tries the plain encoding first), and a value that cycles or
nests too deep is cut (:func:`cut_cycles`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._registry import qualname
from ._values import Unrepresentable, _safe_str

__all__ = ["cut_cycles", "repair_tree"]

Node = Callable[[str, Any, Any, Any], Any]


def _has_surrogates(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _str_node(text: str, node: Node) -> Any:
    # a str UTF-8 cannot carry (lone surrogates, e.g. a file name os.listdir decoded with
    # surrogateescape): its code points, surrogates included, as bytes
    return node("str", text.encode("utf-8", "surrogatepass"), None, None)


def _fix_surrogates(tree: Any, node: Node) -> Any:
    t = type(tree)
    if t is str:
        return _str_node(tree, node) if _has_surrogates(tree) else tree
    if t is list or t is tuple:
        return t(_fix_surrogates(v, node) for v in tree)
    if t is dict:
        if any(type(k) is str and _has_surrogates(k) for k in tree):
            return node(
                "dict",
                [[_fix_surrogates(k, node), _fix_surrogates(v, node)] for k, v in tree.items()],
                None,
                None,
            )
        return {k: _fix_surrogates(v, node) for k, v in tree.items()}
    return tree


def _salvage(tree: Any, node: Node, encode: Callable[[Any], bytes]) -> Any:
    try:
        encode(tree)
        return tree
    except Exception as exc:
        t = type(tree)
        if t is dict:
            return {k: _salvage(v, node, encode) for k, v in tree.items()}
        if t is list or t is tuple:
            return t(_salvage(v, node, encode) for v in tree)
        return node(
            "unrepresentable",
            [qualname(t), f"<could not be encoded: {type(exc).__name__}: {_safe_str(exc)}>"],
            None,
            None,
        )


def repair_tree(tree: Any, node: Node, encode: Callable[[Any], bytes]) -> Any:
    """A tree like ``tree`` that ``encode`` accepts (for a tree it refused): strings with
    lone surrogates as ``str`` nodes (exact), anything else it still refuses replaced by
    ``unrepresentable`` nodes, value by value. Slow; only for the rare refused tree."""
    fixed = _fix_surrogates(tree, node)
    try:
        encode(fixed)
        return fixed
    except Exception:
        return _salvage(fixed, node, encode)


_MAX_DEPTH = 200  # containers kept when a value had to be cut


def cut_cycles(value: Any, active: set[int]) -> Any:
    """A copy of the containers of ``value`` with cycles and absurd depth replaced by
    placeholders (only for values that made the fast walk recurse too deep)."""
    t = type(value)
    if t not in (dict, list, tuple, set, frozenset):
        return value
    key = id(value)
    if key in active or len(active) >= _MAX_DEPTH:
        return Unrepresentable(qualname(t), "<cycle or nesting too deep>")
    active.add(key)
    try:
        if t is dict:
            return {k: cut_cycles(v, active) for k, v in value.items()}
        return t(cut_cycles(v, active) for v in value)
    finally:
        active.discard(key)
