"""eventbus: LangChain / LangGraph ``astream_events`` across processes, type for type.

Workers publish with :class:`Publisher` (or :class:`SyncPublisher`); services follow
runs and consume groups with :class:`Subscriber`. The broker is picked by URL scheme:
``redis://``, ``rediss://``, ``unix://``, ``amqp://``, ``amqps://`` or ``memory://``.
"""

from __future__ import annotations

from . import _langchain  # registers LangChain's types with the codec  # noqa: F401
from ._codec import RemoteException, Undecodable, UnknownType, Unrepresentable, register_type
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
from ._jsonable import to_jsonable
from ._publisher import Publisher, PublisherStats
from ._signing import Keyring
from ._subscriber import FollowItem, Message, Subscriber, SubscriberStats
from ._sync_publisher import SyncPublisher
from .transports import DeadLetter

__version__ = "0.1.0"

# the HTTP gateway needs the `http` extra (Starlette, uvicorn): imported on first use
_LAZY = {
    "Gateway": "_http",
    "GatewayStats": "_http",
    "WebhookForwarder": "_webhooks",
    "WebhookStats": "_webhooks",
}


# the public names report where they are public (repr, tracebacks, docs): eventbus.X, not
# eventbus._private_module.X (as httpx does); the lazy ones keep theirs until imported
for _name, _value in list(globals().items()):
    if not _name.startswith("_") and getattr(_value, "__module__", "").startswith("eventbus."):
        _value.__module__ = __name__
del _name, _value


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus' has no attribute {name!r}")
    import importlib

    try:
        loaded = importlib.import_module(f".{module}", __name__)
    except ImportError as exc:
        raise MissingDependencyError(
            f"eventbus.{name} needs the http extra: pip install 'eventbus[http]' ({exc})"
        ) from exc
    return getattr(loaded, name)


__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConnectError",
    "DeadLetter",
    "DecodeError",
    "EventbusError",
    "FollowItem",
    "Gateway",
    "GatewayStats",
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
