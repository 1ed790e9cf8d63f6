"""Django REST Framework: authenticate requests with keyward tokens and require scopes.

```python
from keyward.drf import HasScopes, KeywardAuthentication

class DropletList(APIView):
    authentication_classes = [KeywardAuthentication]
    permission_classes = [HasScopes("droplet:read")]
```

keyward's URL is the ``KEYWARD_URL`` setting, else the ``KEYWARD_URL`` environment variable.
Optional settings: ``KEYWARD_CACHE_TTL`` (seconds a positive answer is trusted, default 5; 0 asks
every time) and ``KEYWARD_TIMEOUT`` (seconds, default 10).

- No ``Authorization: Bearer`` header: the view answers 401 with ``WWW-Authenticate: Bearer``.
- A token keyward refuses (malformed, unknown, expired, revoked, owner disabled): 401.
- An active token without the scopes ``HasScopes`` names: 403 (keyward decides, so wildcard
  scopes such as ``droplet:*`` count).
- keyward unreachable, slow or answering nonsense: 503 — never "allowed".

``request.user`` is a ``KeywardUser`` (the owner: ``id``, ``name``, ``external_id``;
``is_authenticated`` is true) and ``request.auth`` the ``keyward.Verification`` (``token_id``,
``scopes``, ``expires_at``).
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import (
    AND,
    NOT,
    OR,
    BasePermission,
    OperandHolder,
    SingleOperandHolder,
)

from ._answers import Owner, Verification
from ._cache import DEFAULT_TTL
from ._client import DEFAULT_TIMEOUT, Keyward, resolve_url
from ._errors import KeywardError, Unavailable
from ._format import check_scopes

__all__ = [
    "HasScopes",
    "KeywardAuthentication",
    "KeywardUnavailable",
    "KeywardUser",
    "get_keyward",
]

_clients: dict[tuple[str, float, float], Keyward] = {}
_clients_lock = threading.Lock()


def get_keyward() -> Keyward:
    """The process-wide ``Keyward`` for the current settings (one per URL, TTL and timeout, so
    its cache is shared by every request)."""
    try:
        url = resolve_url(getattr(settings, "KEYWARD_URL", None) or None)
    except KeywardError as e:
        raise ImproperlyConfigured(f"{e} (or the KEYWARD_URL setting)") from None
    ttl = float(getattr(settings, "KEYWARD_CACHE_TTL", DEFAULT_TTL))
    timeout = float(getattr(settings, "KEYWARD_TIMEOUT", DEFAULT_TIMEOUT))
    key = (url, ttl, timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = Keyward(url, ttl=ttl, timeout=timeout)
        return client


class KeywardUnavailable(exceptions.APIException):
    """503: keyward could not vouch for the token, so the request is refused."""

    status_code = 503
    default_detail = "Token verification is unavailable; try again later."
    default_code = "keyward_unavailable"


class KeywardUser:
    """``request.user`` for a keyward token: the token's owner."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        #: keyward's user id, ``usr_…``.
        self.id = self.pk = owner.id
        #: keyward's user name.
        self.name = self.username = owner.name
        #: The platform's own id for the user, ``None`` when it gave keyward none.
        self.external_id = owner.external_id

    def get_username(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"KeywardUser(id={self.id!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeywardUser) and other.owner == self.owner

    def __hash__(self) -> int:
        return hash(self.owner)


def _bearer(request: Any) -> str | None:
    """The bearer token of the request, ``None`` if it presents none; 401 if it is garbled."""
    parts = get_authorization_header(request).split()
    if not parts or parts[0].lower() != b"bearer":
        return None
    if len(parts) != 2:
        raise exceptions.AuthenticationFailed(
            "Invalid Authorization header: expected 'Bearer <token>'.", code="invalid_token"
        )
    try:
        return str(parts[1].decode("ascii"))
    except UnicodeDecodeError:
        raise exceptions.AuthenticationFailed(
            "Invalid token: not ASCII.", code="invalid_token"
        ) from None


def _verify(keyward: Keyward, token: str, scopes: tuple[str, ...], ip: str | None) -> Verification:
    try:
        return keyward.verify(token, scopes, ip)
    except Unavailable:
        raise KeywardUnavailable() from None


class KeywardAuthentication(BaseAuthentication):
    """Authenticates ``Authorization: Bearer <keyward token>``.

    Set ``keyward`` on a subclass to use a client of your own rather than ``get_keyward()``;
    override ``client_ip`` if ``REMOTE_ADDR`` is not the client's address (behind a proxy).
    """

    keyward: Keyward | None = None
    www_authenticate_realm = "api"

    def get_keyward(self) -> Keyward:
        return self.keyward if self.keyward is not None else get_keyward()

    def client_ip(self, request: Any) -> str | None:
        """The address keyward records as the token's last use (``REMOTE_ADDR``, if an IP)."""
        addr = request.META.get("REMOTE_ADDR")
        try:
            return str(ipaddress.ip_address(addr)) if addr else None
        except ValueError:
            return None

    def authenticate(self, request: Any) -> tuple[KeywardUser, Verification] | None:
        token = _bearer(request)
        if token is None:
            return None
        answer = _verify(self.get_keyward(), token, (), self.client_ip(request))
        if not answer.active or answer.owner is None:
            raise exceptions.AuthenticationFailed(
                f"The token is not active: {answer.reason}.", code="invalid_token"
            )
        return KeywardUser(answer.owner), answer

    def authenticate_header(self, request: Any) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'


class HasScopes(BasePermission):
    """Allows a request whose keyward token grants every one of ``scopes`` (none: any active
    token). Use it as ``permission_classes = [HasScopes("droplet:read")]``; it combines with
    ``&``, ``|`` and ``~`` like DRF's permission classes.

    A scope the token holds as such is granted at once; any other (``droplet:read`` against a
    token holding ``droplet:*``) is asked of keyward, which applies its wildcard rules — the
    answer is cached like every positive one.
    """

    def __init__(self, *scopes: str) -> None:
        self.scopes = check_scopes(scopes)
        #: DRF's 403 detail and code when the token lacks the scopes.
        self.message = f"This token lacks the scope {' '.join(self.scopes)}."
        self.code = "insufficient_scope"

    def __call__(self) -> HasScopes:
        # DRF instantiates each entry of permission_classes; an instance stands for itself.
        return self

    def __and__(self, other: Any) -> OperandHolder:
        return OperandHolder(AND, self, other)

    def __or__(self, other: Any) -> OperandHolder:
        return OperandHolder(OR, self, other)

    def __rand__(self, other: Any) -> OperandHolder:
        return OperandHolder(AND, other, self)

    def __ror__(self, other: Any) -> OperandHolder:
        return OperandHolder(OR, other, self)

    def __invert__(self) -> SingleOperandHolder:
        return SingleOperandHolder(NOT, self)

    def __repr__(self) -> str:
        return f"HasScopes({', '.join(map(repr, self.scopes))})"

    def has_permission(self, request: Any, view: Any) -> bool:
        answer = request.auth
        authenticator = request.successful_authenticator
        if not isinstance(answer, Verification) or not isinstance(
            authenticator, KeywardAuthentication
        ):
            # Not authenticated by keyward: DRF answers 401 (no credentials) or 403.
            return False
        if all(scope in answer.scopes for scope in self.scopes):
            return True
        token = _bearer(request)
        if token is None:  # pragma: no cover - the authenticator found one
            return False
        checked = _verify(
            authenticator.get_keyward(), token, self.scopes, authenticator.client_ip(request)
        )
        if checked.active:
            return True
        if checked.reason == "insufficient_scope":
            # False, not an exception, so `HasScopes(a) | HasScopes(b)` can try b: DRF answers
            # 403 with `message` (without an RFC 6750 challenge: DRF sets none on a 403).
            return False
        # Refused since it was authenticated (revoked in between): 401, not 403.
        raise exceptions.AuthenticationFailed(
            f"The token is not active: {checked.reason}.", code="invalid_token"
        )
