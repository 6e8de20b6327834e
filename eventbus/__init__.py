"""eventbus: LangChain / LangGraph ``astream_events`` across processes, type for type.

Workers publish with :class:`Publisher` (or :class:`SyncPublisher`); services follow
runs and consume groups with :class:`Subscriber`. The broker is picked by URL scheme:
``redis://``, ``rediss://``, ``unix://``, ``amqp://``, ``amqps://`` or ``memory://``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    DecodeError,
    EventbusError,
    InvalidResumeToken,
    MissingDependencyError,
    PublishError,
    RemoteRunError,
    RunCancelledError,
    RunError,
    RunNotFoundError,
    SequenceGapError,
    SignatureError,
    TransportError,
    WorkerLostError,
)

if TYPE_CHECKING:
    from ._codec import RemoteException, Undecodable, UnknownType, Unrepresentable, register_type
    from ._control import CancelResult
    from ._http import Gateway, GatewayStats
    from ._jsonable import to_jsonable
    from ._publisher import Publisher, PublisherStats
    from ._runs import DeadRecord, DecodedDeadLetter, RunInfo
    from ._signing import Keyring
    from ._subscriber import FollowItem, Message, Subscriber, SubscriberStats
    from ._sync_publisher import SyncPublisher
    from ._webhooks import WebhookForwarder, WebhookStats
    from .transports import DeadLetter, GroupInfo

__version__ = "0.1.0"

# Everything but the exceptions is imported on first use: ``import eventbus`` (and the
# command line's start-up) must not pay for LangChain, msgspec or a broker client. The
# names report where they are public (repr, tracebacks, docs): eventbus.X, not
# eventbus._private_module.X (as httpx does).
_LAZY = {
    **dict.fromkeys(
        ("RemoteException", "Undecodable", "UnknownType", "Unrepresentable", "register_type"),
        "_codec",
    ),
    "CancelResult": "_control",
    **dict.fromkeys(("DecodedDeadLetter", "DeadRecord", "RunInfo"), "_runs"),
    "to_jsonable": "_jsonable",
    **dict.fromkeys(("Publisher", "PublisherStats"), "_publisher"),
    "Keyring": "_signing",
    **dict.fromkeys(("FollowItem", "Message", "Subscriber", "SubscriberStats"), "_subscriber"),
    "SyncPublisher": "_sync_publisher",
    **dict.fromkeys(("DeadLetter", "GroupInfo"), "transports"),
}
# the HTTP gateway needs the `http` extra (Starlette, uvicorn); these keep their modules
_EXTRA = {
    "Gateway": "_http",
    "GatewayStats": "_http",
    "WebhookForwarder": "_webhooks",
    "WebhookStats": "_webhooks",
}

for _value in list(globals().values()):
    if getattr(_value, "__module__", "").startswith("eventbus."):
        _value.__module__ = __name__
del _value


def __getattr__(name: str) -> object:
    import importlib

    module = _LAZY.get(name)
    if module is not None:
        # LangChain's types are registered with the codec before any value is decoded
        importlib.import_module("._langchain", __name__)
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        if getattr(value, "__module__", "").startswith("eventbus."):
            value.__module__ = __name__
        globals()[name] = value
        return value
    module = _EXTRA.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus' has no attribute {name!r}")
    try:
        loaded = importlib.import_module(f".{module}", __name__)
    except ImportError as exc:
        raise MissingDependencyError(
            f"eventbus.{name} needs the http extra: pip install 'eventbus[http]' ({exc})"
        ) from exc
    return getattr(loaded, name)


__all__ = [
    "AuthenticationError",
    "CancelResult",
    "ConfigurationError",
    "ConnectError",
    "DeadLetter",
    "DeadRecord",
    "DecodeError",
    "DecodedDeadLetter",
    "EventbusError",
    "FollowItem",
    "Gateway",
    "GatewayStats",
    "GroupInfo",
    "InvalidResumeToken",
    "Keyring",
    "Message",
    "MissingDependencyError",
    "PublishError",
    "Publisher",
    "PublisherStats",
    "RemoteException",
    "RemoteRunError",
    "RunCancelledError",
    "RunError",
    "RunInfo",
    "RunNotFoundError",
    "SequenceGapError",
    "SignatureError",
    "Subscriber",
    "SubscriberStats",
    "SyncPublisher",
    "TransportError",
    "Undecodable",
    "UnknownType",
    "Unrepresentable",
    "WebhookForwarder",
    "WebhookStats",
    "WorkerLostError",
    "register_type",
    "to_jsonable",
]
