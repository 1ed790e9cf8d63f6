"""FastAPI: routes depending on require_scopes, through Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import keyward
from conftest import Server
from fastapi_app import app
from keyward.fastapi import require_scopes


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_token_with_the_scope_gets_200_and_the_answer(
    server: Server, client: TestClient
) -> None:
    token = server.token("droplet:read")
    response = client.get("/droplets", headers=bearer(token.secret))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["owner"] == "alice" and body["token_id"] == token.id
    assert body["owner_id"].startswith("usr_")


def test_a_wildcard_scope_grants_the_scope(server: Server, client: TestClient) -> None:
    token = server.token("droplet:*")
    assert client.get("/droplets", headers=bearer(token.secret)).status_code == 200


def test_no_scopes_means_any_active_token(server: Server, client: TestClient) -> None:
    token = server.token("volume:read")
    response = client.get("/whoami", headers=bearer(token.secret))
    assert response.status_code == 200
    assert response.json() == {"token_id": token.id, "scopes": ["volume:read"]}


def test_no_token_gets_401_with_a_bearer_challenge(client: TestClient) -> None:
    response = client.get("/droplets")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    response = client.get("/droplets", headers={"authorization": "Basic YWxpY2U6cHc="})
    assert response.status_code == 401


def test_a_malformed_or_revoked_token_gets_401(server: Server, client: TestClient) -> None:
    response = client.get("/droplets", headers=bearer("garbage"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    token = server.token("droplet:read")
    server.revoke(token)
    response = client.get("/droplets", headers=bearer(token.secret))
    assert response.status_code == 401
    assert response.json() == {"detail": "the token is not active: revoked"}


def test_a_token_without_the_scope_gets_403_with_the_challenge(
    server: Server, client: TestClient
) -> None:
    response = client.get("/droplets", headers=bearer(server.token("volume:read").secret))
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="droplet:read"' in challenge


def test_keyward_unreachable_gets_503(
    server: Server, unreachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = server.token("droplet:read")
    monkeypatch.setenv("KEYWARD_URL", unreachable)
    with TestClient(app) as client:
        response = client.get("/droplets", headers=bearer(token.secret))
    assert response.status_code == 503


def test_an_explicit_client_wins_over_the_environment(
    server: Server, unreachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYWARD_URL", unreachable)
    own = FastAPI()
    kw = keyward.AsyncKeyward(server.url, ttl=0)

    @own.get("/droplets")
    async def droplets(
        token: keyward.Verification = Depends(require_scopes("droplet:read", keyward=kw)),
    ) -> str:
        return token.token_id or ""

    token = server.token("droplet:read")
    with TestClient(own) as client:
        assert client.get("/droplets", headers=bearer(token.secret)).json() == token.id
        server.revoke(token)  # ttl=0: refused at once
        assert client.get("/droplets", headers=bearer(token.secret)).status_code == 401


def test_the_dependency_shows_as_bearer_security_in_the_openapi_document() -> None:
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"


def test_a_malformed_scope_is_refused_when_the_route_is_declared() -> None:
    with pytest.raises(ValueError):
        require_scopes("droplet read")
