"""The type-exact value codec: Python values <-> trees that MessagePack and JSON carry.

A value becomes a tree of ``dict`` (``str`` keys), ``list``, ``str``, ``int`` (64-bit),
``float``, ``bool`` and ``None``, in which every other type travels as a *typed node*:
a tag (which names the type) and a payload (itself a tree), plus extras for pydantic
models that have them. There are two spellings of a typed node:

* in **JSON** (:func:`to_wire`), a map ``{"$t": TAG, "v": PAYLOAD}`` (and ``"x": EXTRA``);
  a user dict that could be mistaken for one (it has a ``"$t"`` key) or that JSON cannot
  carry (a key that is not a ``str``) is itself sent as a ``"dict"`` node of key/value
  pairs, so a dict always comes back as the same dict, whatever it looks like;
* in **MessagePack** (:func:`to_msgpack_tree`), an extension value (ext type 1) whose
  data is the MessagePack array ``[TAG, PAYLOAD]`` or ``[TAG, PAYLOAD, EXTRA]``: out of
  band, so msgspec decodes the whole tree in C and calls back only for typed nodes.

Decoding (:func:`from_wire` for JSON trees, :data:`ext_hook` for MessagePack) only ever
builds the classes in the registry (the allowlist): it never imports a module or looks a
class up by a name from the message, whatever the bytes say. An unknown tag comes back as
:class:`UnknownType`. Decoding is isolated per value and never raises for a node: a node
it cannot rebuild (malformed, refused by its pydantic class' validation, an unhashable set
member or dict key) becomes an :class:`Undecodable` in its place, and the rest arrives
(:func:`take_undecodable` lists the placeholders made, for counting).

Types, both ways exact unless noted:

* ``str int float bool None dict list`` as themselves; ``tuple set frozenset bytes
  bytearray UUID datetime date time timedelta Decimal``, ints beyond 64 bits and dicts
  with non-``str`` keys as typed nodes.
* Registered classes: LangChain's messages, chunks, documents, prompt values,
  generations, results and agent types, ``AddableDict``, ``TextAccessor`` and LangGraph's
  ``Interrupt``/``Command``/``Overwrite`` (see ``eventbus._langchain``), and whatever the
  user registers with :func:`register_type`.
* Builtin exceptions come back as the same class with the same ``args``; other
  exceptions as :class:`RemoteException` (type name, module, message, args).
* Lossy, documented: unregistered pydantic models and dataclasses arrive as plain dicts,
  enums as their value, subclasses of ``str``/``int``/``float``/``dict``/``list``/``tuple`` as
  the base type (a subclass of a registered class as that class); anything else as an
  :class:`Unrepresentable` placeholder carrying the type name and a bounded ``repr`` (so
  does a container that contains itself, where the cycle closes, and an int of more than
  MAX_INT_DIGITS digits). JSON cannot carry NaN or infinities.
* Registered pydantic models carry their private attributes and ``model_fields_set``.
* Strings with lone surrogates are carried exactly, as ``str`` nodes made only when the
  encoder refuses a tree (:func:`encode_tree`, :func:`repair_tree`): encoding never
  raises for a walker's tree, whatever it holds.

Encoding is copy-on-write: containers that hold nothing to convert are passed through as
they are (the caller encodes the tree to bytes at once), so a plain event costs one scan.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

import msgspec

from ._builtin_types import _BUILTIN_EXCEPTIONS as _BUILTIN_EXCEPTIONS
from ._builtin_types import MAX_INT_DIGITS as MAX_INT_DIGITS
from ._builtin_types import _placeholder, _reduce_big_int, _reduce_exception, install_builtins
from ._exceptions import DecodeError
from ._registry import (
    _checks,
    _decoders,
    _direct,
    _is_model,
    _lazy,
    _lazy_tags,
    _model_decoders,
    _model_meta,
    _Reduced,
    _reducers,
    _run_lazy,
    _tag_owners,
    qualname,
    register_type,
)
from ._repair import cut_cycles, repair_tree
from ._values import (
    RemoteException,
    Undecodable,
    UnknownType,
    Unrepresentable,
    _safe_str,
    _undecodable,
    take_undecodable,
)

__all__ = [
    "RemoteException",
    "Undecodable",
    "UnknownType",
    "Unrepresentable",
    "encode_tree",
    "ext_hook",
    "ext_hook_trusted",
    "from_wire",
    "register_type",
    "take_undecodable",
    "to_msgpack_tree",
    "to_wire",
]

TAG = "$t"
VAL = "v"
EXTRA = "x"
META = "m"
EXT_CODE = 1  # the MessagePack extension type of a typed node

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_NoneType = type(None)
# types both formats carry exactly as themselves (ints: see the overflow fallback)
_PLAIN = frozenset({str, int, float, bool, _NoneType})
_SKIP = frozenset({str, float, bool, _NoneType})  # plain, and nothing to check


# ---------------------------------------------------------------------------------------
# encoding


def _reduce_other(value: Any) -> Any:
    """For a value whose exact type has no reducer: a :class:`_Reduced`, or a plainer value
    to encode instead (subclasses of builtins, unregistered models, enums)."""
    cls = type(value)
    module = cls.__module__
    for prefix, install in list(_lazy.items()):
        if module.startswith(prefix):
            _run_lazy(install)
            reduce = _reducers.get(cls)
            if reduce is not None:
                return reduce(value)
    if isinstance(value, BaseException):
        return _reduce_exception(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    for base in cls.__mro__[1:]:  # a subclass of a registered class: the nearest
        reduce = _reducers.get(base)
        if reduce is not None:
            return reduce(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, tuple):
        return tuple(value)
    if _is_model(cls):  # (pydantic is not imported with the codec: see _registry)
        try:
            return value.model_dump()
        except Exception:
            return _placeholder(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return _placeholder(value)


def _make_walker(
    node: Callable[[str, Any, Any, Any], Any], *, immutable_nodes: bool = False
) -> Callable[[Any], Any]:
    """A copy-on-write tree builder that spells typed nodes with
    ``node(tag, payload, extra, meta)``.

    ``immutable_nodes``: the nodes it makes can be shared between trees, so nodes of
    tuples of strings (LangGraph's ``langgraph_path`` and ``langgraph_triggers``, in every
    event of a graph) are made once and reused.
    """
    # exact type -> a function making its node directly (the hot types; filled lazily)
    fast: dict[type, Callable[[Any], Any]] = {}
    tuple_nodes: dict[tuple[str, ...], Any] = {}
    # containers being walked: compiled (see hatch_build.py), these functions call each
    # other without CPython's recursion check, so a cycle would overflow the C stack
    # instead of raising RecursionError
    depth = 0

    def walk(value: Any) -> Any:
        t = type(value)
        if t in _PLAIN:
            if t is int and not _INT_MIN <= value <= _INT_MAX:
                return typed(_reduce_big_int(value))
            return value
        if t is dict:
            return walk_dict(value)
        if t is list:
            return walk_list(value)
        f = fast.get(t)
        if f is None:
            f = make_fast(t)
        if f is not None:
            return f(value)
        reduce = _reducers.get(t)
        if reduce is not None:
            try:
                reduced = reduce(value)
            except Exception:  # a user's encode function failed: never fail the run
                reduced = _placeholder(value)
            return typed(reduced)
        try:
            other = _reduce_other(value)
        except Exception:  # an odd object (a property that raises...): that value only
            other = _placeholder(value)
        return typed(other) if type(other) is _Reduced else walk(other)

    def make_fast(t: type) -> Callable[[Any], Any] | None:
        entry = _direct.get(t)
        if entry is None or _reducers.get(t) is not entry[1]:
            return None
        tag, _, is_str = entry

        def str_node(obj: Any) -> Any:
            return node(tag, str.__str__(obj), None, None)

        def pydantic_node(obj: Any) -> Any:
            extra = obj.__pydantic_extra__
            values = obj.__dict__
            meta = _model_meta(obj, values, extra)
            return node(
                tag,
                walk_dict(values),
                walk_dict(extra) if extra else None,
                None if meta is None else walk_dict(meta),
            )

        made = fast[t] = str_node if is_str else pydantic_node
        return made

    def tuple_node(value: tuple[Any, ...]) -> Any:
        for x in value:
            if type(x) is not str:
                return typed(_Reduced("tuple", list(value)))
        if not immutable_nodes:
            return node("tuple", list(value), None, None)  # a tree holds lists, not tuples
        made = tuple_nodes.get(value)
        if made is None:
            if len(tuple_nodes) >= 4096:
                tuple_nodes.clear()
            # (the node's data is encoded now: the tuple is an array in it)
            made = tuple_nodes[value] = node("tuple", value, None, None)
        return made

    fast[tuple] = tuple_node

    def typed(r: _Reduced) -> Any:
        nonlocal depth
        if depth >= _MAX_WALK_DEPTH:
            raise RecursionError("value nested too deeply")
        depth += 1
        try:
            payload = r.payload
            if type(payload) is not bytes:
                payload = walk(payload)
            return node(
                r.tag,
                payload,
                None if r.extra is None else walk_dict(r.extra),
                None if r.meta is None else walk_dict(r.meta),
            )
        finally:
            depth -= 1

    def walk_dict(d: dict[Any, Any], event: bool = False) -> Any:
        nonlocal depth
        if TAG in d:
            return pairs(d)
        if depth >= _MAX_WALK_DEPTH:
            raise RecursionError("value nested too deeply")
        depth += 1
        try:
            out = None
            for k, v in d.items():
                if type(k) is not str:
                    return pairs(d)
                tv = type(v)
                # the common cases inline: this loop is the publisher's hot path
                if tv in _SKIP:
                    continue
                if tv is dict:
                    if not v:
                        continue
                    # (walk_metadata exists when nodes are immutable, the only case event is set)
                    w = walk_metadata(v) if event and k == "metadata" else walk_dict(v)
                elif tv is list:
                    if not v:
                        continue
                    w = walk_list(v)
                elif tv is int and _INT_MIN <= v <= _INT_MAX:
                    continue
                else:
                    w = walk(v)
                if w is not v:
                    if out is None:
                        out = d.copy()
                    out[k] = w
            return d if out is None else out
        finally:
            depth -= 1

    def pairs(d: dict[Any, Any]) -> Any:
        return node("dict", [[walk(k), walk(v)] for k, v in d.items()], None, None)

    def walk_list(items: list[Any]) -> Any:
        nonlocal depth
        if depth >= _MAX_WALK_DEPTH:
            raise RecursionError("value nested too deeply")
        depth += 1
        try:
            out = None
            for i, v in enumerate(items):
                tv = type(v)
                if tv in _SKIP:
                    continue
                if tv is dict:
                    if not v:
                        continue
                    w = walk_dict(v)
                elif tv is list:
                    if not v:
                        continue
                    w = walk_list(v)
                elif tv is int and _INT_MIN <= v <= _INT_MAX:
                    continue
                else:
                    w = walk(v)
                if w is not v:
                    if out is None:
                        out = items.copy()
                    out[i] = w
            return items if out is None else out
        finally:
            depth -= 1

    def walk_safely(value: Any) -> Any:
        try:
            return walk(value)
        except RecursionError:
            # a cycle (a list that contains itself) or absurd nesting: cut it, then encode
            return walk(cut_cycles(value, set()))

    if not immutable_nodes:
        return walk_safely

    # LangChain hands every event of a run the same metadata dict object. The tree of such
    # a dict, when it holds only immutable values (str, numbers, None, tuples of str), is
    # kept with its keys and the ids of its values: while those are the same, so is the
    # tree. (An entry holds the values, so no other object can take their ids meanwhile.)
    flat_trees: dict[int, tuple[dict[Any, Any], tuple[Any, ...], tuple[Any, ...], Any]] = {}

    def walk_metadata(d: dict[Any, Any]) -> Any:
        # (an entry holds d itself: while it lives, no other dict can have d's id)
        hit = flat_trees.get(id(d))
        if hit is not None and len(d) == len(hit[1]):
            keys, values = hit[1], hit[2]
            for i, (k, v) in enumerate(d.items()):  # (compiled: a C loop, no tuples)
                if v is not values[i] or k != keys[i]:
                    break
            else:
                return hit[3]
        tree = walk_dict(d)
        for v in d.values():
            tv = type(v)
            if tv in _SKIP or (tv is int and _INT_MIN <= v <= _INT_MAX):
                continue
            if tv is tuple and all(type(x) is str for x in v):
                continue
            return tree  # a mutable or odd value: walked every time
        if len(flat_trees) >= 1024:
            flat_trees.clear()
        flat_trees[id(d)] = (d, tuple(d), tuple(d.values()), tree)
        return tree

    def walk_event(event: Any) -> Any:
        """``walk`` for a stream event, with its metadata's tree reused across events."""
        if type(event) is not dict:
            return walk_safely(event)
        try:
            return walk_dict(event, True)
        except RecursionError:
            return walk_safely(event)

    return walk_event


def _json_node(tag: str, payload: Any, extra: Any, meta: Any = None) -> Any:
    if meta is not None:
        if extra is None:
            return {TAG: tag, VAL: payload, META: meta}
        return {TAG: tag, VAL: payload, EXTRA: extra, META: meta}
    if extra is None:
        return {TAG: tag, VAL: payload}
    return {TAG: tag, VAL: payload, EXTRA: extra}


_ext_encoder = msgspec.msgpack.Encoder()


def _ext_node(tag: str, payload: Any, extra: Any, meta: Any = None) -> Any:
    if meta is not None:
        data: Any = (tag, payload, extra, meta)
    else:
        data = (tag, payload) if extra is None else (tag, payload, extra)
    try:
        return msgspec.msgpack.Ext(EXT_CODE, _ext_encoder.encode(data))
    except Exception:  # a str with lone surrogates, or worse: repair this node's tree only
        return msgspec.msgpack.Ext(
            EXT_CODE, _ext_encoder.encode(repair_tree(data, _ext_node, _ext_encoder.encode))
        )


def encode_tree(tree: Any, encode: Callable[[Any], bytes], msgpack: bool = True) -> bytes:
    """``encode(tree)``, or, when it refuses the tree, the encoding of
    :func:`repair_tree`'s repair: it does not raise for a tree a walker made.
    ``msgpack``: the tree's typed nodes are MessagePack ones (else JSON ones)."""
    try:
        return encode(tree)
    except Exception:
        return encode(repair_tree(tree, _ext_node if msgpack else _json_node, encode))


to_wire = _make_walker(_json_node)
to_wire.__doc__ = """The JSON tree of ``value`` (typed nodes as ``{"$t": ..., "v": ...}`` maps).
Never raises for odd values: what it cannot carry becomes an Unrepresentable."""
to_msgpack_tree = _make_walker(_ext_node, immutable_nodes=True)
to_msgpack_tree.__doc__ = """The MessagePack tree of ``value`` (typed nodes as ext type 1)."""

# containers (and typed nodes) the walkers enter before they give up with RecursionError;
# above twice _MAX_DEPTH (eventbus._repair), since a cut value still has two levels per
# tuple or model
_MAX_WALK_DEPTH = 500


# ---------------------------------------------------------------------------------------
# decoding


def _type_name(tag: str) -> str:
    owner = _tag_owners.get(tag)
    return tag if owner is None else qualname(owner)


def _decode_node(tag: Any, payload: Any, extra: Any, meta: Any, validate: bool) -> Any:
    """One typed node rebuilt; never raises: what cannot be rebuilt becomes an
    :class:`Undecodable` in its place."""
    if type(tag) is not str:  # no class has such a tag
        return UnknownType(str(tag), payload)
    dec = _decoders.get(tag)
    if dec is None:
        for prefix, install in list(_lazy_tags.items()):
            if tag.startswith(prefix):
                _run_lazy(install)
                dec = _decoders.get(tag)
        if dec is None:
            return UnknownType(tag, payload)
    try:
        if validate:
            check = _checks.get(tag)
            if check is not None:
                check(payload, extra)
        if meta is None:
            return dec(payload, extra)
        model_dec = _model_decoders.get(tag)
        if model_dec is None:
            raise DecodeError("unexpected meta for this type")
        return model_dec(payload, extra, meta)
    except Exception as exc:  # (RecursionError included: a forged tower of nodes)
        reason = f"{type(exc).__name__}: {' '.join(_safe_str(exc).split())}"
        return _undecodable(_type_name(tag), payload, reason)


def from_wire(value: Any, *, consume: bool = False, validate: bool = True) -> Any:
    """Rebuild the value a JSON tree stands for.

    ``consume=True`` rebuilds it in place (faster): for a tree just decoded, that nobody
    else holds. ``validate``: rebuilt pydantic models must pass their class' validation
    (else they become :class:`Undecodable`); False skips that check (trusted input).
    A typed node that cannot be rebuilt becomes an :class:`Undecodable` in its place.

    Raises:
        DecodeError: the tree is nested deeper than the stack allows.
    """
    try:
        return _from_wire(value if consume else _copy_tree(value, 0), 0, validate)
    except RecursionError as exc:  # a forged message nested deeper than the stack allows
        raise DecodeError("value nested too deeply") from exc


# (the depth arguments: see _make_walker's depth)


def _copy_tree(value: Any, depth: int) -> Any:
    t = type(value)
    if t is not dict and t is not list:
        return value
    if depth >= _MAX_WALK_DEPTH:
        raise RecursionError("value nested too deeply")
    if t is dict:
        return {k: _copy_tree(v, depth + 1) for k, v in value.items()}
    return [_copy_tree(v, depth + 1) for v in value]


def _from_wire(value: Any, depth: int, validate: bool) -> Any:
    t = type(value)
    if t is not dict and t is not list:
        return value
    if depth >= _MAX_WALK_DEPTH:
        raise RecursionError("value nested too deeply")
    depth += 1
    if t is dict:
        if TAG in value:
            meta = value.get(META)
            return _decode_node(
                value[TAG],
                _from_wire(value.get(VAL), depth, validate),
                _from_wire(value.get(EXTRA), depth, validate),
                None if meta is None else _from_wire(meta, depth, validate),
                validate,
            )
        for k, v in value.items():
            tv = type(v)
            if (tv is dict or tv is list) and v:
                w = _from_wire(v, depth, validate)
                if w is not v:
                    value[k] = w
        return value
    for i, v in enumerate(value):
        tv = type(v)
        if (tv is dict or tv is list) and v:
            w = _from_wire(v, depth, validate)
            if w is not v:
                value[i] = w
    return value


def _ext(code: int, data: memoryview, validate: bool) -> Any:
    if code != EXT_CODE:
        return _undecodable(
            "?", bytes(data[:64]), f"MessagePack extension type {code} is not eventbus'"
        )
    try:
        node = (_ext_decoder if validate else _ext_decoder_trusted).decode(data)
    except Exception as exc:  # the node's bytes themselves are bad (forged): this node only
        return _undecodable("?", bytes(data[:64]), f"malformed typed node: {_safe_str(exc)}")
    n = len(node) if type(node) is list else 0
    if not 2 <= n <= 4:
        return _undecodable("?", node, "malformed typed node: not [tag, payload, ...]")
    return _decode_node(
        node[0], node[1], node[2] if n >= 3 else None, node[3] if n == 4 else None, validate
    )


def ext_hook(code: int, data: memoryview) -> Any:
    """msgspec's ``ext_hook`` for MessagePack trees: rebuilds one typed node (its payload
    already decoded, nested nodes included), validating pydantic models. Never raises:
    what cannot be rebuilt becomes an :class:`Undecodable` in its place."""
    return _ext(code, data, True)


def ext_hook_trusted(code: int, data: memoryview) -> Any:
    """:func:`ext_hook` without the validation of pydantic models (trusted input)."""
    return _ext(code, data, False)


_ext_decoder = msgspec.msgpack.Decoder(ext_hook=ext_hook)
_ext_decoder_trusted = msgspec.msgpack.Decoder(ext_hook=ext_hook_trusted)


from ._speedups import settle  # noqa: E402 - about this very module, once it is made

if settle(__name__, __file__):  # (else the source's codec took this one's place)
    install_builtins()
