"""The codec's registry (the allowlist): which classes travel as typed nodes, under which
tags, and how each is reduced to a payload and rebuilt from one.

``eventbus._codec`` walks values with these tables (its hot loop, compiled); this module
fills them: :func:`register_type` for users, :func:`register_builtin` for eventbus' own
registrations (``eventbus._langchain``), :func:`register_lazily` for an optional library's.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigurationError, DecodeError

if TYPE_CHECKING:
    import pydantic

# pydantic is imported when a class is registered, not with the codec: a command-line
# reader that meets no model does without it (about a tenth of `eventbus tail`'s start-up)

__all__ = ["register_builtin", "register_lazily", "register_type"]


def _is_model(cls: type) -> bool:
    """A pydantic model class (pydantic imported only if it was: else ``cls`` is none)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and issubclass(cls, pydantic.BaseModel)


def qualname(cls: type) -> str:
    """``module.QualName`` of ``cls``."""
    return f"{cls.__module__}.{cls.__qualname__}"


class _Reduced:
    """What a reducer makes of a value: its tag, its payload (walked further unless it is
    ``bytes``), pydantic extras (or None) and pydantic meta (or None: see
    :func:`_model_meta`)."""

    __slots__ = ("extra", "meta", "payload", "tag")

    def __init__(self, tag: str, payload: Any, extra: Any = None, meta: Any = None) -> None:
        self.tag = tag
        self.payload = payload
        self.extra = extra
        self.meta = meta


Reducer = Callable[[Any], _Reduced]
# (decoded payload, decoded extra or None) -> the value
Decoder = Callable[[Any, Any], Any]
# (decoded fields, decoded extra or None, decoded meta or None) -> the model
ModelDecoder = Callable[[Any, Any, Any], Any]

_reducers: dict[type, Reducer] = {}  # exact type -> reducer
_decoders: dict[str, Decoder] = {}  # tag -> decoder
_model_decoders: dict[str, ModelDecoder] = {}  # tag -> decoder, for nodes that carry meta
# tag -> a check that raises unless the class' own validation accepts the payload
_checks: dict[str, Callable[[Any, Any], None]] = {}
_tag_owners: dict[str, type] = {}  # tag -> its class (re-registering the same class is fine)
# eventbus' pydantic and str-subclass registrations -> (tag, their reducer, is a str):
# walkers make their nodes directly, while that reducer is still the registered one
_direct: dict[type, tuple[str, Reducer, bool]] = {}
_builtin_tags: set[str] = set()
# module prefix -> registers that library's types; run once, when one of its types is seen
_lazy: dict[str, Callable[[], None]] = {}
# tag prefix -> the same, when one of its tags arrives
_lazy_tags: dict[str, Callable[[], None]] = {}


def register_lazily(module_prefix: str, tag_prefix: str, install: Callable[[], None]) -> None:
    """Run ``install`` (which registers types under ``tag_prefix``) the first time a value
    from a module under ``module_prefix`` is encoded or such a tag is decoded, so that an
    optional library is imported only when it is used."""
    _lazy[module_prefix] = install
    _lazy_tags[tag_prefix] = install


def _run_lazy(install: Callable[[], None]) -> None:
    for table in (_lazy, _lazy_tags):
        for key in [k for k, v in table.items() if v is install]:
            del table[key]
    install()


def _add(cls: type, tag: str, reduce: Reducer, decode: Decoder, *, builtin: bool) -> None:
    if tag in _decoders and _tag_owners.get(tag) is not cls:
        raise ConfigurationError(f"type tag {tag!r} is already registered")
    _reducers[cls] = reduce
    _decoders[tag] = decode
    _tag_owners[tag] = cls
    _model_decoders.pop(tag, None)
    _checks.pop(tag, None)
    if builtin:
        _builtin_tags.add(tag)


def _model_meta(obj: Any, fields: dict[str, Any], extra: Any) -> Any:
    """What a pydantic model holds besides its fields and extras, when it differs from
    the default: ``{"s": names}``, the fields that were set (``model_fields_set``, sorted),
    when not all were, and ``{"p": map}``, its private attributes (``PrivateAttr``;
    pydantic's ``==`` compares them). None: all fields set, no private attributes."""
    meta = None
    fields_set = obj.__pydantic_fields_set__
    if len(fields_set) != len(fields) + (len(extra) if extra else 0):
        meta = {"s": sorted(fields_set)}
    private = obj.__pydantic_private__
    if private:
        if meta is None:
            meta = {}
        meta["p"] = private
    return meta


def _without_custom_init(schema: Any) -> Any:
    schema = dict(schema)
    if schema.get("type") == "model":
        schema["custom_init"] = False
    elif isinstance(schema.get("schema"), dict):
        schema["schema"] = _without_custom_init(schema["schema"])
    return schema


def _checking_validator(cls: type[pydantic.BaseModel]) -> Any:
    """The validator of ``cls``' schema (its fields' types and its field and model
    validators) without a custom ``__init__``: LangChain's messages define one that
    only rearranges arguments and validates a second time (measured: 3.5x the cost)."""
    import pydantic_core

    try:
        return pydantic_core.SchemaValidator(_without_custom_init(cls.__pydantic_core_schema__))
    except Exception:  # a schema this cannot rebuild: the class' own validator
        return cls.__pydantic_validator__


def _register_pydantic(cls: type[pydantic.BaseModel], tag: str, *, builtin: bool) -> None:
    import pydantic_core

    fields = frozenset(cls.model_fields)
    allows_extra = cls.model_config.get("extra") == "allow"
    private_attrs = dict(cls.__private_attributes__)
    aliases = {
        name: f.validation_alias if isinstance(f.validation_alias, str) else f.alias
        for name, f in cls.model_fields.items()
        if (isinstance(f.validation_alias, str) and f.validation_alias != name)
        or (f.alias is not None and f.alias != name)
    }
    validator: Any = None  # made at the first check (_checking_validator)

    def reduce(obj: Any) -> _Reduced:
        values = obj.__dict__
        extra = obj.__pydantic_extra__ or None
        return _Reduced(tag, values, extra, _model_meta(obj, values, extra))

    _direct[cls] = (tag, reduce, False)  # walkers encode it straight from __dict__

    def private_of(received: Any) -> dict[str, Any] | None:
        if not private_attrs:
            return None
        made: dict[str, Any] = {}
        for name, attr in private_attrs.items():
            if type(received) is dict and name in received:
                made[name] = received[name]
            else:
                default = attr.get_default()
                if default is not pydantic_core.PydanticUndefined:
                    made[name] = default
        return made

    def decode(values: Any, extra: Any, meta: Any) -> Any:
        if type(values) is not dict or (extra is not None and type(extra) is not dict):
            raise DecodeError(f"{tag}: fields and extras must be maps")
        names = private = None
        if meta is not None:
            if type(meta) is not dict:
                raise DecodeError(f"{tag}: meta must be a map")
            names = meta.get("s")
            private = meta.get("p")
            if (names is not None and type(names) is not list) or (
                private is not None and type(private) is not dict
            ):
                raise DecodeError(f"{tag}: malformed meta")
        if names is None:
            fields_set = set(values)
        else:  # (only names of fields it has: a forged name is not a field)
            fields_set = {k for k in names if type(k) is str and k in values}
        if values.keys() == fields:
            # exactly the fields the sender had: set them as they were (and as validation,
            # when asked for, accepted them), which is what the sender's object holds, 3x
            # faster than model_construct
            obj = cls.__new__(cls)
            object.__setattr__(obj, "__dict__", values)
            if extra and allows_extra:
                fields_set.update(extra)
            object.__setattr__(obj, "__pydantic_fields_set__", fields_set)
            object.__setattr__(obj, "__pydantic_extra__", (extra or {}) if allows_extra else None)
            object.__setattr__(obj, "__pydantic_private__", private_of(private))
            return obj
        # another version of the class: fill defaults for missing fields
        if extra and allows_extra:
            values = {**values, **extra}
            fields_set.update(extra)
        # (_fields_set passed positionally: a forged "_fields_set" key is then a TypeError)
        obj = cls.model_construct(
            fields_set & (fields | set(values)),
            **{k: v for k, v in values.items() if type(k) is str},
        )
        if private_attrs:
            object.__setattr__(obj, "__pydantic_private__", private_of(private))
        return obj

    def check(values: Any, extra: Any) -> None:
        nonlocal validator
        if type(values) is not dict or (extra is not None and type(extra) is not dict):
            raise DecodeError(f"{tag}: fields and extras must be maps")
        data = {**values, **extra} if extra and allows_extra else values
        if aliases:
            data = {aliases.get(k, k): v for k, v in data.items()}
        if validator is None:
            validator = _checking_validator(cls)
        validator.validate_python(data)

    _add(cls, tag, reduce, lambda values, extra: decode(values, extra, None), builtin=builtin)
    _model_decoders[tag] = decode
    _checks[tag] = check


def _register_dataclass(cls: type, tag: str, *, builtin: bool) -> None:
    names = tuple(f.name for f in dataclasses.fields(cls))
    init = tuple(f.name for f in dataclasses.fields(cls) if f.init)

    def reduce(obj: Any) -> _Reduced:
        return _Reduced(tag, {n: getattr(obj, n) for n in names})

    def decode(values: Any, extra: Any) -> Any:
        if type(values) is not dict:
            raise DecodeError(f"{tag}: fields must be a map")
        obj = cls(**{n: values[n] for n in init if n in values})
        for n in names:
            if n not in init and n in values:
                object.__setattr__(obj, n, values[n])
        return obj

    _add(cls, tag, reduce, decode, builtin=builtin)


def register_type(
    cls: type,
    *,
    tag: str | None = None,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> None:
    """Let instances of ``cls`` cross the wire as ``cls`` (instead of a dict or a placeholder).

    Pydantic models and dataclasses need only ``cls``; any other class needs ``encode``
    (instance -> a value the codec can carry) and ``decode`` (that value -> instance).
    Register the same types, with the same tags, in publishers and subscribers; a
    subscriber that does not know a tag gets an :class:`UnknownType`. The tag defaults
    to ``"module:QualName"``; it is only a name, never imported.

    Raises:
        ConfigurationError: the tag is taken, or ``encode``/``decode`` are needed and missing.
    """
    tag = tag or f"{cls.__module__}:{cls.__qualname__}"
    if tag in _builtin_tags:
        raise ConfigurationError(f"type tag {tag!r} is reserved")
    _register(cls, tag, encode, decode, builtin=False)


def register_builtin(
    cls: type,
    tag: str,
    *,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> None:
    """eventbus' own registrations (``eventbus._langchain``), under tags users cannot
    take: as :func:`register_type`, and subclasses of ``dict`` and ``str`` need only
    ``cls`` too.

    Raises:
        ConfigurationError: the tag is taken, or ``encode``/``decode`` are needed and missing.
    """
    _register(cls, tag, encode, decode, builtin=True)


def _register(
    cls: type,
    tag: str,
    encode: Callable[[Any], Any] | None,
    decode: Callable[[Any], Any] | None,
    *,
    builtin: bool,
) -> None:
    if encode is not None or decode is not None:
        if encode is None or decode is None:
            raise ConfigurationError("register_type needs both encode and decode, or neither")
        enc, dec = encode, decode
        _add(
            cls,
            tag,
            lambda obj: _Reduced(tag, enc(obj)),
            lambda payload, extra: dec(payload),
            builtin=builtin,
        )
    elif isinstance(cls, type) and _is_model(cls):
        _register_pydantic(cls, tag, builtin=builtin)
    elif dataclasses.is_dataclass(cls):
        _register_dataclass(cls, tag, builtin=builtin)
    elif builtin and isinstance(cls, type) and issubclass(cls, dict):
        _register_dict_subclass(cls, tag)
    elif builtin and isinstance(cls, type) and issubclass(cls, str):
        _register_str_subclass(cls, tag)
    else:
        raise ConfigurationError(
            f"{qualname(cls)} is neither a pydantic model nor a dataclass: pass encode= and decode="
        )


def _register_dict_subclass(cls: type[dict[Any, Any]], tag: str) -> None:
    def decode(values: Any, extra: Any) -> Any:
        if type(values) is not dict:
            raise DecodeError(f"{tag}: payload must be a map")
        return cls(values)

    _add(cls, tag, lambda obj: _Reduced(tag, dict(obj)), decode, builtin=True)


def _register_str_subclass(cls: type[str], tag: str) -> None:
    def decode(payload: Any, extra: Any) -> Any:
        if type(payload) is not str:
            raise DecodeError(f"{tag}: payload must be a string")
        return cls(payload)

    def reduce(obj: Any) -> _Reduced:
        return _Reduced(tag, str.__str__(obj))

    _direct[cls] = (tag, reduce, True)  # (LangChain's TextAccessor chunks)
    _add(cls, tag, reduce, decode, builtin=True)


# LangChain's and LangGraph's types are installed lazily (eventbus._langchain says how):
# whoever uses the registry has those installers, whatever it imported first
from . import _langchain  # noqa: E402, F401
