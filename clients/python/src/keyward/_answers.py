"""Typed answers, parsed strictly from keyward's JSON: anything that does not fit raises
``Unavailable`` (for a verification, an answer we cannot read is no answer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._errors import Unavailable

#: The reasons keyward gives for an inactive token (``Verification.reason``).
REASONS = frozenset(
    {"malformed", "unknown", "expired", "revoked", "insufficient_scope", "owner_disabled"}
)


@dataclass(frozen=True)
class Owner:
    """A token's owner: keyward's user id (``usr_…``), user name and, if the platform gave one,
    its own id for the user (``external_id``; ``None`` also from servers older than the field)."""

    id: str
    name: str
    external_id: str | None = None


@dataclass(frozen=True)
class Verification:
    """keyward's answer about one token (``POST /v1/verify``).

    ``active`` is true only if the token is active *and* grants every scope asked for; then
    ``token_id``, ``owner`` and ``scopes`` (everything the token holds) are set and ``reason`` is
    ``None``. Otherwise ``reason`` says why (one of ``REASONS``) and the rest is empty.
    """

    active: bool
    reason: str | None = None
    token_id: str | None = None
    owner: Owner | None = None
    scopes: tuple[str, ...] = ()
    #: When the token expires (UTC); ``None`` for a token that never expires.
    expires_at: datetime | None = None

    @property
    def id(self) -> str | None:
        """The token's id, ``tok_…`` (same as ``token_id``)."""
        return self.token_id

    @classmethod
    def refused(cls, reason: str) -> Verification:
        """An inactive answer."""
        return cls(active=False, reason=reason)


@dataclass(frozen=True)
class TokenRecord:
    """A token as the management API shows it: never its secret."""

    id: str
    owner: str
    name: str
    scopes: tuple[str, ...]
    hint: str
    created_at: datetime
    state: str
    expires_at: datetime | None = None
    regenerated_at: datetime | None = None
    last_used_at: datetime | None = None
    last_used_ip: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None


@dataclass(frozen=True)
class IssuedToken:
    """A new or regenerated token with its secret, which keyward shows this once."""

    token: TokenRecord
    #: The secret. Kept out of ``repr()`` so it does not end up in a log by accident.
    secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenPage:
    """One page of ``GET /v1/tokens``, newest first; ``next`` is the cursor of the following
    page (``None`` on the last)."""

    tokens: tuple[TokenRecord, ...]
    next: str | None


@dataclass(frozen=True)
class User:
    """A user as the management API shows it (``GET /v1/users/{id}``)."""

    #: ``usr_…``.
    id: str
    name: str
    #: ``person`` or ``service`` (a service account, which never signs in).
    kind: str
    #: The platform's own id for the user, ``None`` when it gave none.
    external_id: str | None
    email: str | None
    #: Whether the user is an admin (manages users; may hold ``users:*`` and ``tokens:issue``).
    admin: bool
    created_at: datetime
    #: When the user was disabled; ``None`` while they are not.
    disabled_at: datetime | None = None


@dataclass(frozen=True)
class UserPage:
    """One page of ``GET /v1/users``, newest first; ``next`` is the ``before`` of the following
    page (``None`` on the last)."""

    users: tuple[User, ...]
    next: str | None


def _fail(what: str) -> Unavailable:
    return Unavailable(f"keyward's answer is not understood: {what}")


def _str(obj: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _fail(f"{key!r} is not a string")
    return value


def _time(obj: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = _str(obj, key, optional=optional)
    if value is None:
        return None
    try:
        # fromisoformat reads "Z" only from Python 3.11 on.
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"{key!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise _fail(f"{key!r} has no offset")
    return at.astimezone(timezone.utc)


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise _fail(f"{key!r} is not a boolean")
    return value


def _strings(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _fail(f"{key!r} is not a list of strings")
    return tuple(value)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{what} is not an object")
    return value


def parse_verification(body: Any) -> Verification:
    """A ``/v1/verify`` answer, or ``Unavailable`` if it is not one."""
    obj = _object(body, "the answer")
    active = obj.get("active")
    if active is False:
        reason = _str(obj, "reason")
        return Verification.refused(reason)
    if active is not True:
        raise _fail("'active' is not a boolean")
    owner = _object(obj.get("owner"), "'owner'")
    return Verification(
        active=True,
        token_id=_str(obj, "token_id"),
        owner=Owner(
            id=_str(owner, "id"),
            name=_str(owner, "name"),
            external_id=_str(owner, "external_id", optional=True),
        ),
        scopes=_strings(obj, "scopes"),
        expires_at=_time(obj, "expires_at", optional=True),
    )


def parse_token(body: Any) -> TokenRecord:
    """A ``Token`` object of the management API."""
    obj = _object(body, "the token")
    return TokenRecord(
        id=_str(obj, "id"),
        owner=_str(obj, "owner"),
        name=_str(obj, "name"),
        scopes=_strings(obj, "scopes"),
        hint=_str(obj, "hint"),
        created_at=_time(obj, "created_at"),
        state=_str(obj, "state"),
        expires_at=_time(obj, "expires_at", optional=True),
        regenerated_at=_time(obj, "regenerated_at", optional=True),
        last_used_at=_time(obj, "last_used_at", optional=True),
        last_used_ip=_str(obj, "last_used_ip", optional=True),
        revoked_at=_time(obj, "revoked_at", optional=True),
        revoked_by=_str(obj, "revoked_by", optional=True),
        revoke_reason=_str(obj, "revoke_reason", optional=True),
    )


def parse_issued(body: Any) -> IssuedToken:
    """``{"token", "secret"}`` of create and regenerate."""
    obj = _object(body, "the answer")
    return IssuedToken(token=parse_token(obj.get("token")), secret=_str(obj, "secret"))


def parse_token_response(body: Any) -> TokenRecord:
    """``{"token"}`` of get and revoke."""
    return parse_token(_object(body, "the answer").get("token"))


def parse_page(body: Any) -> TokenPage:
    """``{"tokens", "next"}`` of list."""
    obj = _object(body, "the answer")
    tokens = obj.get("tokens")
    if not isinstance(tokens, list):
        raise _fail("'tokens' is not a list")
    return TokenPage(
        tokens=tuple(parse_token(t) for t in tokens), next=_str(obj, "next", optional=True)
    )


def parse_user(body: Any) -> User:
    """A ``User`` object of the management API."""
    obj = _object(body, "the user")
    return User(
        id=_str(obj, "id"),
        name=_str(obj, "name"),
        kind=_str(obj, "kind"),
        external_id=_str(obj, "external_id", optional=True),
        email=_str(obj, "email", optional=True),
        admin=_bool(obj, "admin"),
        created_at=_time(obj, "created_at"),
        disabled_at=_time(obj, "disabled_at", optional=True),
    )


def parse_user_page(body: Any) -> UserPage:
    """``{"users", "next"}`` of ``GET /v1/users``."""
    obj = _object(body, "the answer")
    users = obj.get("users")
    if not isinstance(users, list):
        raise _fail("'users' is not a list")
    return UserPage(
        users=tuple(parse_user(u) for u in users), next=_str(obj, "next", optional=True)
    )
