"""Offline checks of what keyward would refuse anyway: the token text and the scope syntax.

Mirrors ``crates/keyward-core/src/format.rs`` and ``scope.rs``. A token is
``<prefix>_<body><checksum>``: a prefix ``[a-z][a-z0-9]{1,15}``, 43 base62 characters of body and
6 base62 characters of CRC32 (IEEE) of everything before them. These constants are keyward's
wire format; they change only if keyward's do.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LEN = 43
CHECKSUM_LEN = 6

_TOKEN = re.compile(r"[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{%d}" % (BODY_LEN + CHECKSUM_LEN))
_SCOPE_PART = r"(?:\*|[a-z0-9_-]{1,64})"
_SCOPE = re.compile(_SCOPE_PART + ":" + _SCOPE_PART)


def _checksum(prefix_and_body: bytes) -> str:
    crc = zlib.crc32(prefix_and_body)
    digits = []
    for _ in range(CHECKSUM_LEN):
        crc, digit = divmod(crc, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def is_well_formed(token: str) -> bool:
    """Whether ``token`` has a keyward token's shape and a matching checksum (no I/O)."""
    if not _TOKEN.fullmatch(token):
        return False
    split = len(token) - CHECKSUM_LEN
    return _checksum(token[:split].encode("ascii")) == token[split:]


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes as a tuple of strings, each ``resource:action`` (``*`` allowed on either side).

    Raises ``ValueError`` for anything keyward would answer 400 to: a misspelt scope in an
    application's code is a bug to see at start-up, not a refusal to see at run time.
    """
    if isinstance(scopes, (str, bytes)):
        raise TypeError("scopes must be a sequence of strings, not one string")
    out = tuple(scopes)
    for scope in out:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise ValueError(
                f"{scope!r} is not a scope: expected resource:action, each lowercase letters, "
                "digits, '-', '_' or '*'"
            )
    return out
