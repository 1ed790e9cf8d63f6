"""FastAPI: a dependency that requires a keyward token with scopes.

```python
from keyward.fastapi import require_scopes

@app.get("/droplets")
async def droplets(token: Verification = Depends(require_scopes("droplet:read"))):
    return {"owner": token.owner.name}
```

keyward's URL is the ``KEYWARD_URL`` environment variable unless ``require_scopes`` is given an
``AsyncKeyward``. Answers: 401 with ``WWW-Authenticate: Bearer`` for no token or one keyward
refuses, 403 with the ``insufficient_scope`` challenge for an active token without the scopes
(keyward decides, so ``droplet:*`` grants ``droplet:read``), 503 when keyward cannot answer —
never "allowed".
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations at run time.

import ipaddress
import threading
from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ._answers import Verification
from ._client import AsyncKeyward, resolve_url
from ._format import check_scopes
from ._errors import Unavailable

__all__ = ["default_keyward", "require_scopes"]

_bearer = HTTPBearer(auto_error=False, description="A keyward token")
_clients: dict[str, AsyncKeyward] = {}
_clients_lock = threading.Lock()


def default_keyward() -> AsyncKeyward:
    """The process-wide ``AsyncKeyward`` for ``$KEYWARD_URL`` (its cache shared by every
    request)."""
    url = resolve_url(None)
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = AsyncKeyward(url)
        return client


def _client_ip(request: Request) -> str | None:
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


def require_scopes(
    *scopes: str, keyward: AsyncKeyward | None = None, realm: str = "api"
) -> Callable[..., Awaitable[Verification]]:
    """A dependency that lets a request through only with an active keyward token granting every
    one of ``scopes`` (none: any active token), and gives the route keyward's answer."""
    wanted = check_scopes(scopes)
    challenge = f'Bearer realm="{realm}"'

    async def verified_token(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Verification:
        if credentials is None:
            raise HTTPException(401, "authentication required", {"WWW-Authenticate": challenge})
        client = keyward if keyward is not None else default_keyward()
        try:
            answer = await client.verify(credentials.credentials, wanted, _client_ip(request))
        except Unavailable:
            raise HTTPException(503, "token verification is unavailable") from None
        if answer.active:
            return answer
        if answer.reason == "insufficient_scope":
            raise HTTPException(
                403,
                f"this token lacks the scope {' '.join(wanted)}",
                {
                    "WWW-Authenticate": f'{challenge}, error="insufficient_scope", '
                    f'scope="{" ".join(wanted)}"'
                },
            )
        raise HTTPException(
            401,
            f"the token is not active: {answer.reason}",
            {"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
        )

    return verified_token
