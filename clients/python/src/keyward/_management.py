"""``Management``: the token and user endpoints of keyward's HTTP API, for a backend or a script
that holds a management token (one with ``tokens:*`` or the ``tokens:…`` scopes it needs; for the
user calls, an admin's token with ``users:…`` and ``tokens:issue``)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from typing import Any, Literal
from urllib.parse import quote

import httpx

from ._answers import (
    IssuedToken,
    TokenPage,
    TokenRecord,
    User,
    UserPage,
    parse_issued,
    parse_page,
    parse_token_response,
    parse_user,
    parse_user_page,
)
from ._client import DEFAULT_TIMEOUT, _unavailable, resolve_url
from ._errors import ApiError, Unavailable
from ._format import check_scopes


class _Unset(enum.Enum):
    """``update_user``'s default for a field ``None`` would remove: leave it as it is."""

    UNSET = enum.auto()


class Management:
    """Create, list, get, revoke and regenerate tokens at the keyward server at ``url``
    (default: ``$KEYWARD_URL``), authenticated with the management ``token``; and, with an
    admin's token, manage users and mint tokens for them (``create_user`` … ``issue_token``).

    keyward refusing a request (4xx: bad input, a token without the scope, another user's token)
    raises ``ApiError`` with its ``status`` and ``code``; a server that cannot answer raises
    ``Unavailable``. A token can never make a token with more rights or a longer life than its
    own (keyward clamps the expiry: read it from the answer).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.timeout = timeout
        self._token = token
        self._http = http_client or httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"Management({self.url!r})"

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        try:
            response = self._http.request(
                method,
                self.url + path,
                json=body,
                params=params,
                headers={"authorization": f"Bearer {self._token}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as e:
            raise _unavailable(e) from None
        if response.status_code == 204:
            return None
        try:
            answer = response.json()
        except ValueError:
            raise Unavailable(f"keyward answered {response.status_code}, not JSON") from None
        if response.is_success:
            return answer
        error = answer.get("error") if isinstance(answer, dict) else None
        if 400 <= response.status_code < 500 and isinstance(error, dict):
            raise ApiError(
                response.status_code, str(error.get("code")), str(error.get("message"))
            )
        raise Unavailable(f"keyward answered {response.status_code}")

    @staticmethod
    def _id(id: str) -> str:
        return quote(id, safe="")

    def create(
        self, name: str, scopes: Iterable[str], *, expires: str | None = None
    ) -> IssuedToken:
        """A new token (``POST /v1/tokens``); its secret is in the answer, this once.

        ``expires``: a duration (``30d``, ``12h``), an RFC 3339 time or ``never``; the
        deployment's default lifetime when ``None``.
        """
        body: dict[str, Any] = {"name": name, "scopes": list(check_scopes(scopes))}
        if expires is not None:
            body["expires"] = expires
        return parse_issued(self._call("POST", "/v1/tokens", body=body))

    def list_page(self, *, limit: int | None = None, after: str | None = None) -> TokenPage:
        """One page of the caller's tokens, newest first (``GET /v1/tokens``)."""
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        return parse_page(self._call("GET", "/v1/tokens", params=params))

    def list(self, *, page_size: int | None = None) -> Iterator[TokenRecord]:
        """Every token of the caller's owner, newest first, following ``next`` page by page."""
        after: str | None = None
        while True:
            page = self.list_page(limit=page_size, after=after)
            yield from page.tokens
            if page.next is None:
                return
            after = page.next

    def get(self, token_id: str) -> TokenRecord:
        """One token (``GET /v1/tokens/{id}``)."""
        return parse_token_response(self._call("GET", f"/v1/tokens/{self._id(token_id)}"))

    def revoke(self, token_id: str, *, reason: str | None = None) -> TokenRecord:
        """Revokes a token (``DELETE /v1/tokens/{id}``); the record stays, revoked."""
        body = {"reason": reason} if reason is not None else None
        return parse_token_response(
            self._call("DELETE", f"/v1/tokens/{self._id(token_id)}", body=body)
        )

    def regenerate(
        self,
        token_id: str,
        *,
        grace_period: str | None = None,
        expires: str | None = None,
    ) -> IssuedToken:
        """A new secret for the same token (``POST /v1/tokens/{id}/regenerate``); the old one
        keeps working for ``grace_period`` (e.g. ``10m``; none by default)."""
        body: dict[str, Any] = {}
        if grace_period is not None:
            body["grace_period"] = grace_period
        if expires is not None:
            body["expires"] = expires
        return parse_issued(
            self._call("POST", f"/v1/tokens/{self._id(token_id)}/regenerate", body=body)
        )

    def create_user(
        self,
        name: str,
        *,
        external_id: str | None = None,
        email: str | None = None,
        admin: bool = False,
        kind: Literal["person", "service"] = "person",
        password: str | None = None,
    ) -> User:
        """A new user (``POST /v1/users``, ``users:create``).

        ``external_id`` is the platform's own id for the user (unique; tokens' verification
        answers carry it as ``owner.external_id``). A ``service`` account never signs in and takes
        no ``password``. keyward answers 409 (``ApiError``) for a name or external id taken.
        """
        body: dict[str, Any] = {"name": name, "kind": kind, "admin": admin}
        if external_id is not None:
            body["external_id"] = external_id
        if email is not None:
            body["email"] = email
        if password is not None:
            body["password"] = password
        return parse_user(self._call("POST", "/v1/users", body=body))

    def list_users(
        self,
        *,
        external_id: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> UserPage:
        """One page of users, newest first (``GET /v1/users``, ``users:read``); pass the page's
        ``next`` as ``before`` for the following one."""
        params: dict[str, Any] = {}
        if external_id is not None:
            params["external_id"] = external_id
        if limit is not None:
            params["limit"] = limit
        if before is not None:
            params["before"] = before
        return parse_user_page(self._call("GET", "/v1/users", params=params))

    def iter_users(
        self, *, external_id: str | None = None, page_size: int | None = None
    ) -> Iterator[User]:
        """Every user, newest first, following ``next`` page by page."""
        before: str | None = None
        while True:
            page = self.list_users(external_id=external_id, limit=page_size, before=before)
            yield from page.users
            if page.next is None:
                return
            before = page.next

    def get_user(self, user_id: str) -> User:
        """One user (``GET /v1/users/{id}``, ``users:read``)."""
        return parse_user(self._call("GET", f"/v1/users/{self._id(user_id)}"))

    def find_user_by_external_id(self, external_id: str) -> User | None:
        """The user with this external id, or ``None`` if there is none (external ids are
        unique)."""
        users = self.list_users(external_id=external_id, limit=1).users
        return users[0] if users else None

    def update_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        email: str | None | _Unset = _Unset.UNSET,
        external_id: str | None | _Unset = _Unset.UNSET,
        admin: bool | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Changes the fields given (``PATCH /v1/users/{id}``, ``users:update``); ``email=None``
        or ``external_id=None`` removes it. A disabled user's tokens are refused
        (``owner_disabled``) but not revoked; ``disabled=False`` enables them again."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if not isinstance(email, _Unset):
            body["email"] = email
        if not isinstance(external_id, _Unset):
            body["external_id"] = external_id
        if admin is not None:
            body["admin"] = admin
        if disabled is not None:
            body["disabled"] = disabled
        return parse_user(self._call("PATCH", f"/v1/users/{self._id(user_id)}", body=body))

    def delete_user(self, user_id: str) -> None:
        """Deletes a user for good (``DELETE /v1/users/{id}``, ``users:delete``): every token of
        theirs is revoked ("owner deleted") before keyward answers."""
        self._call("DELETE", f"/v1/users/{self._id(user_id)}")

    def issue_token(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str],
        *,
        expires: str | None = None,
    ) -> IssuedToken:
        """A new token of the user ``user_id`` (``POST /v1/users/{id}/tokens``,
        ``tokens:issue``); its secret is in the answer, this once. ``expires`` as for
        ``create``; keyward clamps it to the calling token's own expiry."""
        body: dict[str, Any] = {"name": name, "scopes": list(check_scopes(scopes))}
        if expires is not None:
            body["expires"] = expires
        return parse_issued(
            self._call("POST", f"/v1/users/{self._id(user_id)}/tokens", body=body)
        )

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> Management:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
