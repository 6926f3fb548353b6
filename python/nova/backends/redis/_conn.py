"""Connection handling: URL redaction, client creation with a ping, error translation.

Credentials never leave this module in clear: every message, log record and ``repr`` uses
:func:`redact_url`, and texts coming from redis-py go through :meth:`Secrets.scrub`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from ...errors import BackendError, ValidationError

__all__ = ["redact_url", "Secrets", "connect", "without_retries", "backend_error", "TRANSIENT"]

_SCHEMES = ("redis", "rediss", "unix")
_SECRET_PARAMS = ("password", "username")

#: Errors after which a consumer loop waits and tries again (Redis down, restarting, loading).
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    ConnectionError,
    OSError,
)


def redact_url(url: str) -> str:
    """``url`` with its user name, password and any ``password=``/``username=`` query
    parameter replaced by ``***``: safe for logs, errors and ``repr``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable Redis URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = []
        for item in query.split("&"):
            key, sep, _value = item.partition("=")
            if key.lower() in _SECRET_PARAMS and sep:
                pairs.append(f"{key}=***")
            else:
                pairs.append(item)
        query = "&".join(pairs)
    text = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    if query:
        text += f"?{query}"
    if parts.fragment:
        text += f"#{parts.fragment}"
    return text


class Secrets:
    """The credentials found in a URL, to scrub them out of any text."""

    __slots__ = ("_values",)

    def __init__(self, url: str) -> None:
        values: set[str] = set()
        try:
            parts = urlsplit(url)
            for raw in (parts.password, parts.username):
                if raw:
                    values.update({raw, unquote(raw)})
            for item in parts.query.split("&"):
                key, _sep, value = item.partition("=")
                if key.lower() in _SECRET_PARAMS and value:
                    values.update({value, unquote(value)})
        except ValueError:
            pass
        # Longest first, so a secret containing another is replaced whole.
        self._values = sorted((v for v in values if v), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "***")
        return text

    def __repr__(self) -> str:
        return f"Secrets({len(self._values)} hidden)"


def backend_error(where: str, exc: BaseException, secrets: Secrets, hint: str = "") -> BackendError:
    """A BackendError for ``exc`` (its text scrubbed). The original is kept as ``__cause__``
    only when its text holds no credential."""
    text = f"{type(exc).__name__}: {exc}"
    clean = secrets.scrub(text)
    message = f"{where}: {clean}"
    if hint:
        message = f"{message}. {hint}"
    err = BackendError(message)
    if clean == text and secrets.scrub(repr(exc)) == repr(exc):
        err.__cause__ = exc
    else:
        err.__suppress_context__ = True
    return err


def raise_backend_error(where: str, exc: BaseException, secrets: Secrets, hint: str = "") -> NoReturn:
    err = backend_error(where, exc, secrets, hint)
    raise err


def without_retries(client: redis.Redis) -> redis.Redis:
    """A second client to the same server whose commands are never retried by redis-py: the
    consumer loop must see every connection error (a read whose reply was lost leaves
    entries pending that only a re-read of them recovers)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def connect(
    url: str, *, socket_timeout: float, connect_timeout: float, options: Mapping[str, Any] | None, label: str
) -> redis.Redis:
    """A redis-py client for ``url`` that answered PING; BackendError when Redis refuses the
    connection or the credentials, ValidationError for a malformed URL."""
    if not isinstance(url, str) or not url:
        raise ValidationError(
            f"RedisBackend: url must be a non-empty str such as "
            f"'redis://localhost:6379/0', got {type(url).__name__}"
        )
    secrets = Secrets(url)
    safe = redact_url(url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ValidationError(
            f"RedisBackend: url {safe!r} must start with redis://, rediss:// (TLS) or unix://"
        )
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "socket_keepalive": True,
        # A short retry: a dead server is reported (BackendError) within a fraction of a
        # second instead of redis-py's default backoff of several seconds.
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        "health_check_interval": 15,
        # RESP2: the reply shapes the backend parses are the same on every Redis >= 5.
        "protocol": 2,
    }
    if options:
        kwargs.update(options)
    try:
        client: redis.Redis = redis.Redis.from_url(url, **kwargs)
    except Exception as exc:  # malformed URL or option: never echo the raw URL
        raise ValidationError(
            f"RedisBackend: cannot use url {safe!r}: {secrets.scrub(f'{type(exc).__name__}: {exc}')}"
        ) from None
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        client.close()
        raise_backend_error(
            f"{label}: Redis at {safe} refused the credentials",
            exc,
            secrets,
            "Check the user name and password in the URL",
        )
    except redis.ResponseError as exc:
        client.close()
        hint = (
            "Check the user name and password in the URL"
            if ("AUTH" in str(exc).upper() or "WRONGPASS" in str(exc).upper())
            else ""
        )
        raise_backend_error(f"{label}: Redis at {safe} refused us", exc, secrets, hint)
    except Exception as exc:
        client.close()
        raise_backend_error(
            f"{label}: cannot connect to Redis at {safe}",
            exc,
            secrets,
            "Check that redis-server is running and reachable at that address",
        )
    return client
