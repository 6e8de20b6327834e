"""The one exception tree of eventbus.

Every error eventbus raises on purpose is an :class:`EventbusError`; broker and
codec errors are translated into it and raised ``from`` the original::

    EventbusError
    ├── ConfigurationError (ValueError)      bad URL, unknown scheme, bad option
    │   └── MissingDependencyError (ImportError)   optional extra not installed
    ├── InvalidResumeToken (ValueError)      ``follow(after=...)`` got a token it did not issue
    ├── TransportError                       the broker could not be used
    │   ├── ConnectError                     unreachable, refused, lost for good
    │   ├── AuthenticationError              credentials or vhost refused (final)
    │   └── PublishError                     events not published (retries exhausted, closed)
    │       └── TransportClosedError         the transport was closed (every operation)
    ├── DecodeError                          a malformed, foreign, forged or oversized message
    │   └── SignatureError                   unsigned or badly signed (subscriber with keys)
    ├── SequenceGapError                     a followed run is missing events (bad frame, retention)
    ├── RunNotFoundError                     a followed run did not start in ``start_timeout``
    └── RunError                             a followed run did not end normally
        ├── RemoteRunError                   it raised: original type, message, traceback
        ├── RunCancelledError                it was cancelled in the worker
        └── WorkerLostError                  its worker went silent for ``idle_timeout``
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConnectError",
    "DecodeError",
    "EventbusError",
    "InvalidResumeToken",
    "MissingDependencyError",
    "PublishError",
    "RemoteRunError",
    "RunCancelledError",
    "RunError",
    "RunNotFoundError",
    "SequenceGapError",
    "SignatureError",
    "TransportClosedError",
    "TransportError",
    "WorkerLostError",
]


class EventbusError(Exception):
    """Base class of every error eventbus raises."""


class ConfigurationError(EventbusError, ValueError):
    """A URL, scheme or option is not valid."""


class MissingDependencyError(ConfigurationError, ImportError):
    """The transport for a URL scheme needs an optional extra that is not installed."""


class InvalidResumeToken(EventbusError, ValueError):
    """A resume token passed to ``follow(after=...)`` was not issued by eventbus."""


class TransportError(EventbusError):
    """The broker could not be used."""


class ConnectError(TransportError):
    """The broker is unreachable, refused the connection, or the connection was lost for good."""


class AuthenticationError(TransportError):
    """The broker refused the credentials (or the vhost/database). Final: never retried."""


class PublishError(TransportError):
    """Events could not be published: the publisher is closed or the broker kept failing."""


class TransportClosedError(PublishError):
    """The transport was closed: every operation of a closed transport raises this one.

    Exported as ``eventbus.transports.TransportClosedError`` (callers of the public API
    meet it as the :class:`PublishError` or :class:`TransportError` it is). A
    :class:`PublishError`, so that ``publish`` keeps its contract (nothing published),
    and a :class:`TransportError` for everything else.
    """


class DecodeError(EventbusError):
    """A message could not be decoded: malformed, truncated, foreign, forged or oversized.

    Consumers count these (``Subscriber.stats``), log them and go on; they never stop a
    consumer loop.
    """


class SignatureError(DecodeError):
    """A subscriber with keys got a frame it must not trust: ``reason`` is ``"unsigned"``
    or ``"bad_signature"`` (a key id it does not have, or a MAC that does not match)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class SequenceGapError(EventbusError):
    """A followed run is missing events: a frame of it could not be decoded (``reason``
    says which and why), or, when no such frame was seen, retention trimmed them.

    ``got`` is the number the stream continues at, None when nothing followed the frame
    that could not be decoded (its records, the run's end among them, are lost).
    """

    def __init__(
        self, run_id: str, expected: int, got: int | None, reason: str | None = None
    ) -> None:
        self.run_id = run_id
        self.expected = expected
        self.got = got
        self.reason = reason
        if got is None:
            missing = f"event #{expected} and what follows it are missing"
        else:
            missing = (
                f"expected event #{expected} but the stream continues at #{got}; "
                f"{got - expected} event(s) are missing"
            )
        why = f": {reason}" if reason else " (trimmed by retention?)"
        super().__init__(f"run {run_id}: {missing}{why}")


class RunNotFoundError(EventbusError):
    """A followed run did not start within ``start_timeout``."""


class RunError(EventbusError):
    """A followed run did not end normally."""

    run_id: str


class RemoteRunError(RunError):
    """The run raised in the worker.

    Attributes carry what the worker saw: ``type_name`` and ``module`` of the original
    exception, its ``message`` (``str(exc)``) and the formatted ``traceback``.
    """

    def __init__(
        self, run_id: str, type_name: str, module: str, message: str, traceback: str
    ) -> None:
        self.run_id = run_id
        self.type_name = type_name
        self.module = module
        self.message = message
        self.traceback = traceback
        qual = type_name if module in ("builtins", "") else f"{module}.{type_name}"
        super().__init__(f"run {run_id} failed in the worker: {qual}: {message}")


class RunCancelledError(RunError):
    """The run was cancelled in the worker (task cancelled, or its consumer stopped early)."""

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(f"run {run_id} was cancelled in the worker: {reason}")


class WorkerLostError(RunError):
    """Nothing (not even a heartbeat) arrived from the run's worker for ``idle_timeout`` seconds."""

    def __init__(self, run_id: str, idle_timeout: float) -> None:
        self.run_id = run_id
        self.idle_timeout = idle_timeout
        super().__init__(
            f"run {run_id}: no event or heartbeat from its worker for {idle_timeout:g}s; "
            "the worker is presumed dead"
        )
