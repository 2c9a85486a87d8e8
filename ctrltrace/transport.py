"""HTTP to the kube-apiserver: connection settings, raw-JSON requests and watch streams.

Owns where credentials come from (``--kubeconfig``, ``KUBECONFIG``, in-cluster, then
``~/.kube/config``, loaded through kubernetes_asyncio's config loaders) and the aiohttp session
that carries every request as plain JSON, with connect, read and watch-inactivity timeouts.
Knows nothing of kinds, caches or controllers.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

Json = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer, with the Status the apiserver sent.

    ``details`` is the Status's ``details`` (name, group, kind, and for 422 the ``causes``:
    which field is wrong and why), empty when the server sent none.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        method: str,
        path: str,
        *,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details: Mapping[str, Any] = details or {}

    @property
    def causes(self) -> list[Mapping[str, Any]]:
        """The Status's ``details.causes``: for 422, one entry per invalid field."""
        return list(self.details.get("causes") or ())


class NotFound(ApiError):
    """404: the object (or the kind) does not exist."""


class Conflict(ApiError):
    """409 Conflict: the object changed since it was read (stale resourceVersion); read it
    again and retry."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: a create found an object of that name."""


class Invalid(ApiError):
    """422: the object fails validation; ``causes`` says which fields and why."""


class Forbidden(ApiError):
    """403: RBAC (or an admission policy) refuses the request."""


class ConfigError(Exception):
    """No usable kubeconfig (missing, unreadable, no such context)."""


class WatchExpired(ApiError):
    """410 Gone: the resourceVersion is too old to watch from; list again."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0  # a plain request that takes longer than this has hung
    # The server ends every watch within its timeoutSeconds (at most 300 s here); silence
    # longer than that means a half-dead connection.
    watch_inactivity: float = 330.0


def kubeconfig_path(kubeconfig: str | None = None) -> str | None:
    """The kubeconfig file to use, or None to use the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if not path and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    path = path or str(Path.home() / ".kube" / "config")
    if not Path(path).is_file():
        raise ConfigError(f"kubeconfig {path} does not exist")
    return path


async def load_configuration(
    kubeconfig: str | None = None, context: str | None = None
) -> Configuration:
    """Connection settings in controller-runtime's order of precedence: the flag,
    ``KUBECONFIG``, the in-cluster service account, then ``~/.kube/config``."""
    configuration = Configuration()
    path = kubeconfig_path(kubeconfig)
    try:
        if path is None:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await load_kube_config(
                config_file=path, context=context, client_configuration=configuration
            )
    except ConfigException as error:
        raise ConfigError(f"kubeconfig {path or '(in-cluster)'}: {error}") from error
    except OSError as error:
        raise ConfigError(f"kubeconfig {path}: {error.strerror or error}") from error
    return configuration


class Transport:
    """One aiohttp session to one apiserver."""

    def __init__(self, configuration: Configuration, timeouts: Timeouts = Timeouts()) -> None:
        self._configuration = configuration
        self.host = str(configuration.host).rstrip("/")
        self.timeouts = timeouts
        self._ssl = _ssl_context(configuration)
        self._server_hostname: str | None = getattr(configuration, "tls_server_name", None)
        self._session: aiohttp.ClientSession | None = None
        self._static_auth: dict[str, str] | None = None

    @property
    def user_hint(self) -> str:
        """Who we talk as, in words, for error messages (the cert or token is not shown)."""
        if self._configuration.cert_file:
            return "a client certificate"
        return "a bearer token" if self._configuration.api_key else "no credentials"

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=64),
                json_serialize=json.dumps,
            )
        return self._session

    async def _auth_headers(self) -> dict[str, str]:
        if self._static_auth is not None:
            return self._static_auth
        settings = await self._configuration.auth_settings()
        headers = {item["key"]: item["value"] for item in settings.values() if item["value"]}
        # Tokens from exec plugins refresh themselves through the hook; static ones are cached.
        if self._configuration.refresh_api_key_hook is None:
            self._static_auth = headers
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Json:
        headers = {"Accept": accept, **await self._auth_headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeouts.connect, sock_read=self.timeouts.read
        )
        async with self._session_now().request(
            method,
            self.host + path,
            params=params,
            data=data,
            headers=headers,
            timeout=timeout,
            server_hostname=self._server_hostname,
        ) as response:
            payload = await response.read()
            if response.status >= 300:
                raise _api_error(response.status, payload, method, path)
            decoded: Json = json.loads(payload) if payload else {}
            return decoded

    async def watch(
        self,
        path: str,
        params: Mapping[str, str],
        opened: Callable[[], None] | None = None,
        *,
        accept: str = "application/json",
    ) -> AsyncIterator[Json]:
        """Yield each watch event ({"type", "object"}) until the server ends the stream;
        ``opened`` is called once the server has accepted the watch, before any event."""
        headers = {"Accept": accept, **await self._auth_headers()}
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeouts.connect, sock_read=self.timeouts.watch_inactivity
        )
        async with self._session_now().get(
            self.host + path,
            params={**params, "watch": "true"},
            headers=headers,
            timeout=timeout,
            server_hostname=self._server_hostname,
        ) as response:
            if response.status >= 300:
                raise _api_error(response.status, await response.read(), "WATCH", path)
            if opened is not None:
                opened()
            while line := await response.content.readline():
                if line.strip():
                    yield json.loads(line)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            # aiohttp closes TLS transports one loop iteration later.
            await asyncio.sleep(0)


def _ssl_context(configuration: Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_ERRORS: dict[tuple[int, str], type[ApiError]] = {
    (409, "AlreadyExists"): AlreadyExists,
}
_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: WatchExpired,
    422: Invalid,
}


def api_error(status: int, status_body: Json, method: str, path: str) -> ApiError:
    """The typed error for a Status the server sent (in an answer or a watch ERROR event)."""
    reason = str(status_body.get("reason") or status)
    kind = _ERRORS.get((status, reason)) or _ERRORS_BY_STATUS.get(status, ApiError)
    details = status_body.get("details")
    return kind(
        status,
        reason,
        str(status_body.get("message", "")),
        method,
        path,
        details=details if isinstance(details, Mapping) else None,
    )


def _api_error(status: int, payload: bytes, method: str, path: str) -> ApiError:
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):  # not a Status: a proxy's page, say
        body = {"message": payload.decode(errors="replace")[:300]}
    return api_error(status, body, method, path)
