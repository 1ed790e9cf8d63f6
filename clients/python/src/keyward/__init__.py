"""Python client for keyward, the self-hosted personal access token service.

```python
import keyward
kw = keyward.Keyward("http://127.0.0.1:8080")      # or $KEYWARD_URL
answer = kw.verify(token, scopes=["droplet:read"])
if answer.active:
    print(answer.owner.name, answer.scopes, answer.expires_at)
```

Integrations: ``keyward.drf`` (Django REST Framework), ``keyward.fastapi`` (FastAPI).
"""

from importlib.metadata import PackageNotFoundError, version

from ._answers import (
    REASONS,
    IssuedToken,
    Owner,
    TokenPage,
    TokenRecord,
    User,
    UserPage,
    Verification,
)
from ._cache import DEFAULT_CAPACITY, DEFAULT_TTL, AnswerCache
from ._client import DEFAULT_TIMEOUT, URL_ENV, AsyncKeyward, Keyward
from ._errors import ApiError, KeywardError, Unavailable
from ._format import is_well_formed
from ._management import Management

try:
    __version__ = version("keyward")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TTL",
    "REASONS",
    "URL_ENV",
    "AnswerCache",
    "ApiError",
    "AsyncKeyward",
    "IssuedToken",
    "Keyward",
    "KeywardError",
    "Management",
    "Owner",
    "TokenPage",
    "TokenRecord",
    "Unavailable",
    "User",
    "UserPage",
    "Verification",
    "__version__",
    "is_well_formed",
]
