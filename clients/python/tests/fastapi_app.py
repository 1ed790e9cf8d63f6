"""A FastAPI app protected by keyward, as a user of the client would write it."""

from typing import Any

from fastapi import Depends, FastAPI

from keyward import Verification
from keyward.fastapi import require_scopes

app = FastAPI()


@app.get("/droplets")
async def list_droplets(token: Verification = Depends(require_scopes("droplet:read"))) -> Any:
    assert token.owner is not None
    return {"owner": token.owner.name, "owner_id": token.owner.id, "token_id": token.token_id}


@app.get("/whoami")
async def whoami(token: Verification = Depends(require_scopes())) -> Any:
    return {"token_id": token.token_id, "scopes": list(token.scopes)}
