"""``Keyward`` and ``AsyncKeyward``: verify tokens by asking a keyward server."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Iterable
from typing import Any

import httpx

from ._answers import Verification, parse_verification
from ._cache import DEFAULT_CAPACITY, DEFAULT_TTL, AnswerCache
from ._errors import KeywardError, Unavailable
from ._format import check_scopes, is_well_formed

#: The environment variable every integration reads keyward's URL from, unless given one.
URL_ENV = "KEYWARD_URL"
#: Seconds a request to keyward may take, in all (connect, send, wait, read), by default.
DEFAULT_TIMEOUT = 10.0


def resolve_url(url: str | None) -> str:
    """``url`` if given, else ``$KEYWARD_URL``; the base URL without a trailing slash."""
    if url is None:
        url = os.environ.get(URL_ENV) or None
    if url is None:
        raise KeywardError(f"no keyward URL: pass one, or set the {URL_ENV} environment variable")
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise KeywardError(f"not an http(s) URL: {url!r}")
    return url.rstrip("/")


def _request(
    token: str, scopes: Iterable[str], ip: str | None
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The checked scopes and the ``/v1/verify`` body; ``ValueError`` for what keyward would
    refuse with 400 (a malformed scope or address is the caller's bug, not a refusal)."""
    if not isinstance(token, str):
        raise TypeError("token must be a string")
    wanted = check_scopes(scopes)
    body: dict[str, Any] = {"token": token}
    if wanted:
        body["scopes"] = list(wanted)
    if ip is not None:
        ipaddress.ip_address(ip)  # ValueError if it is not one
        body["ip"] = ip
    return wanted, body


def _answer(response: httpx.Response) -> Verification:
    if not response.is_success:
        raise Unavailable(f"keyward answered {response.status_code} to a verification")
    try:
        body = response.json()
    except ValueError:
        raise Unavailable("keyward's answer is not JSON") from None
    return parse_verification(body)


def _unavailable(e: Exception) -> Unavailable:
    # The exception's text names the URL and the cause, never the token (it is in the body).
    return Unavailable(f"keyward is unreachable: {type(e).__name__}: {e}")


class _Base:
    def __init__(
        self,
        url: str | None,
        *,
        ttl: float,
        capacity: int,
        timeout: float,
    ) -> None:
        self.url = resolve_url(url)
        self.timeout = timeout
        self.cache = AnswerCache(ttl, capacity)
        self._verify_url = f"{self.url}/v1/verify"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, ttl={self.cache.ttl})"


class Keyward(_Base):
    """A verifier asking the keyward server at ``url`` (default: ``$KEYWARD_URL``).

    ``verify`` answers with a ``Verification``; a refusal is an answer (``active`` false with a
    ``reason``), while a server that cannot answer raises ``Unavailable`` — never an "active".
    Positive answers are kept ``ttl`` seconds (default 5; 0 asks every time), see ``AnswerCache``.
    Thread-safe; make one per process and share it.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        ttl: float = DEFAULT_TTL,
        capacity: int = DEFAULT_CAPACITY,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(url, ttl=ttl, capacity=capacity, timeout=timeout)
        self._http = http_client or httpx.Client(timeout=timeout)

    def verify(
        self, token: str, scopes: Iterable[str] = (), ip: str | None = None
    ) -> Verification:
        """Whether ``token`` is active and grants every scope of ``scopes``.

        ``ip`` is the end client's address, which keyward records as the token's last use.
        A malformed token is refused here, without asking.
        """
        wanted, body = _request(token, scopes, ip)
        if not is_well_formed(token):
            return Verification.refused("malformed")
        key = self.cache.key(token, wanted)
        if self.cache.enabled and (cached := self.cache.get(key)) is not None:
            return cached
        try:
            response = self._http.post(self._verify_url, json=body, timeout=self.timeout)
        except httpx.HTTPError as e:
            raise _unavailable(e) from None
        answer = _answer(response)
        self.cache.put(key, answer)
        return answer

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> Keyward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncKeyward(_Base):
    """``Keyward`` for asyncio: the same answers, cache and failure behaviour, with
    ``await verify(...)``. Safe to share between tasks; a connection pool is made per event loop
    (so one instance also serves test clients that run each app in a loop of its own)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        ttl: float = DEFAULT_TTL,
        capacity: int = DEFAULT_CAPACITY,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(url, ttl=ttl, capacity=capacity, timeout=timeout)
        self._given = http_client
        self._pools: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        for old in [old for old in self._pools if old.is_closed()]:
            del self._pools[old]
        client = self._pools.get(loop)
        if client is None:
            client = self._pools[loop] = httpx.AsyncClient(timeout=self.timeout)
        return client

    async def verify(
        self, token: str, scopes: Iterable[str] = (), ip: str | None = None
    ) -> Verification:
        """See ``Keyward.verify``."""
        wanted, body = _request(token, scopes, ip)
        if not is_well_formed(token):
            return Verification.refused("malformed")
        key = self.cache.key(token, wanted)
        if self.cache.enabled and (cached := self.cache.get(key)) is not None:
            return cached
        try:
            response = await self._client().post(
                self._verify_url, json=body, timeout=self.timeout
            )
        except httpx.HTTPError as e:
            raise _unavailable(e) from None
        answer = _answer(response)
        self.cache.put(key, answer)
        return answer

    async def aclose(self) -> None:
        """Closes the connection pool of the running event loop (and the one given)."""
        if self._given is not None:
            await self._given.aclose()
        loop = asyncio.get_running_loop()
        client = self._pools.pop(loop, None)
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> AsyncKeyward:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
