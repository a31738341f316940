"""Opening connections to RabbitMQ, with failures turned into one clear `BrokerUnavailableError`.

Workers use robust connections (aio-pika reconnects, then re-opens channels, restores QoS and
re-registers consumers). The first connection attempt is fail-fast: a broker that is not there
at start-up is an error for a person to fix, not something to retry silently.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aiormq.exceptions import AuthenticationError, InvalidFrameError, ProbableAuthenticationError

from mshale_fl.broker.errors import CREDENTIALS_HINT, VHOST_HINT, BrokerUnavailableError


class _DropTransportErrors(logging.Filter):
    """aiormq logs every failed connection attempt at ERROR before raising it; the caller gets
    a `BrokerUnavailableError` (and aio-pika logs its reconnection attempts), so the line is noise
    that would break the CLI's promise of one clear line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_DropTransportErrors())

RECONNECT_INTERVAL = 1.0
"""Seconds between reconnection attempts (aio-pika's default is 5): a worker is idle meanwhile."""

CONNECT_TIMEOUT = 10.0
HEARTBEAT = 30


def broker_user(url: str) -> str:
    """The user a URL authenticates as: the value RabbitMQ requires in a message's `user_id`."""
    username = urlsplit(url).username
    return unquote(username) if username else "guest"


async def connect(
    url: str,
    *,
    name: str = "mshale-fl",
    robust: bool = True,
    reconnect_interval: float = RECONNECT_INTERVAL,
    timeout: float = CONNECT_TIMEOUT,
) -> AbstractConnection:
    """Connect to `url`; raises `BrokerUnavailableError` (one line, no password) on failure."""
    try:
        if robust:
            connection: AbstractConnection = await aio_pika.connect_robust(
                url,
                client_properties={"connection_name": name},
                reconnect_interval=reconnect_interval,
                heartbeat=HEARTBEAT,
                timeout=timeout,
            )
        else:
            connection = await aio_pika.connect(
                url, client_properties={"connection_name": name}, heartbeat=HEARTBEAT, timeout=timeout
            )
    except (AuthenticationError, ProbableAuthenticationError) as error:
        raise BrokerUnavailableError(url, f"authentication refused: {_first_line(error)}", hint=CREDENTIALS_HINT) from None
    except InvalidFrameError as error:
        if "Connection.Close" in str(error):  # refused at Connection.Open: the virtual host
            cause = f"the broker refused to open virtual host {_vhost(url)!r}"
            raise BrokerUnavailableError(url, cause, hint=VHOST_HINT) from None
        raise BrokerUnavailableError(url, f"unexpected reply: {_first_line(error)}") from None
    except (OSError, TimeoutError, socket.gaierror, ConnectionError) as error:
        raise BrokerUnavailableError(url, _first_line(error) or type(error).__name__) from None
    except Exception as error:  # aiormq wraps some transport failures in its own types
        if "ACCESS_REFUSED" in str(error):
            raise BrokerUnavailableError(url, _first_line(error), hint=CREDENTIALS_HINT) from None
        raise BrokerUnavailableError(url, f"{type(error).__name__}: {_first_line(error)}") from None
    return connection


async def connect_robust(url: str, *, name: str = "mshale-fl", **kwargs: float) -> AbstractRobustConnection:
    connection = await connect(url, name=name, robust=True, **kwargs)
    assert isinstance(connection, AbstractRobustConnection)
    return connection


def _vhost(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, asyncio.TimeoutError) and not text:
        return "timed out"
    return text.splitlines()[0] if text else ""
