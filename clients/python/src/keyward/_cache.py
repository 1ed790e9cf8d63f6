"""The short cache of positive answers, with the semantics of the Rust ``RemoteVerifier``.

- Only active answers are kept; a refusal is never cached, so a new token works at once.
- An entry lives ``ttl`` seconds (default 5): a token revoked on the server may still pass here
  for up to that long after its revocation. ``ttl=0`` turns the cache off.
- At most ``capacity`` entries (default 10 000); the least recently used goes first.
- The key is an HMAC-SHA256 of the token under a key random to this process, so the cache holds
  no token in clear; it is combined with the sorted scopes asked for, because the scopes are
  checked by the server (its wildcard rules are not re-implemented here).
- A cached answer whose token has expired since is refused locally (``expired``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone

from ._answers import Verification

#: How long a positive answer is trusted by default, in seconds (the Rust ``DEFAULT_REMOTE_TTL``).
DEFAULT_TTL = 5.0
#: How many positive answers are kept by default (the Rust ``REMOTE_CACHE_CAPACITY``).
DEFAULT_CAPACITY = 10_000

CacheKey = tuple[bytes, tuple[str, ...]]


class AnswerCache:
    """A thread-safe TTL + LRU map from (HMAC of token, sorted scopes) to active answers."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        capacity: int = DEFAULT_CAPACITY,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        if ttl < 0:
            raise ValueError("ttl must be >= 0")
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.ttl = float(ttl)
        self.capacity = capacity
        self._monotonic = monotonic
        self._now = now
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[CacheKey, tuple[float, Verification]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when ``ttl`` is 0: every verification asks keyward."""
        return self.ttl > 0

    def key(self, token: str, scopes: tuple[str, ...]) -> CacheKey:
        """The key for ``token`` asked with ``scopes``; the token itself is not in it."""
        digest = hmac.new(self._key, token.encode("utf-8"), hashlib.sha256).digest()
        return digest, tuple(sorted(set(scopes)))

    def get(self, key: CacheKey) -> Verification | None:
        """The cached answer, if fresh; an expired token's answer is turned into a refusal."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored_at, answer = entry
            if self._monotonic() - stored_at >= self.ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        if answer.expires_at is not None and answer.expires_at <= self._now():
            return Verification.refused("expired")
        return answer

    def put(self, key: CacheKey, answer: Verification) -> None:
        """Keeps ``answer`` if it is positive (refusals are never cached)."""
        if not answer.active or not self.enabled:
            return
        with self._lock:
            self._entries[key] = (self._monotonic(), answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forgets every answer."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
