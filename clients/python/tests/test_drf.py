"""Django REST Framework: a view protected with KeywardAuthentication and HasScopes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from conftest import Server


@pytest.fixture
def client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[APIClient]:
    monkeypatch.delenv("KEYWARD_URL", raising=False)
    with override_settings(KEYWARD_URL=server.url):
        yield APIClient()


def get(client: APIClient, path: str, token: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.get(path, **headers)


def test_a_token_with_the_scope_gets_200_with_user_and_auth(
    server: Server, client: APIClient
) -> None:
    token = server.token("droplet:read")
    response = get(client, "/droplets", token.secret)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["user_name"] == "alice" and body["user_id"].startswith("usr_")
    assert body["user_external_id"] is None
    assert body["is_authenticated"] is True
    assert body["token_id"] == token.id and body["scopes"] == ["droplet:read"]


def test_a_wildcard_scope_grants_the_scope(server: Server, client: APIClient) -> None:
    assert get(client, "/droplets", server.token("droplet:*").secret).status_code == 200
    assert get(client, "/droplets", server.token("*:read").secret).status_code == 200


def test_no_token_gets_401_with_a_bearer_challenge(client: APIClient) -> None:
    response = get(client, "/droplets")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    response = client.get("/droplets", HTTP_AUTHORIZATION="Basic YWxpY2U6cHc=")
    assert response.status_code == 401


@pytest.mark.parametrize("garbage", ["garbage", "two words", "kwp_" + "a" * 49])
def test_a_malformed_token_gets_401(client: APIClient, garbage: str) -> None:
    response = get(client, "/droplets", garbage)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_gets_401(server: Server, client: APIClient) -> None:
    token = server.token("droplet:read")
    server.revoke(token)
    response = get(client, "/droplets", token.secret)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "revoked" in response.json()["detail"]


def test_a_token_revoked_after_use_gets_401_at_once_without_the_cache(
    server: Server, client: APIClient
) -> None:
    token = server.token("droplet:read")
    with override_settings(KEYWARD_CACHE_TTL=0):
        assert get(client, "/droplets", token.secret).status_code == 200
        server.revoke(token)
        assert get(client, "/droplets", token.secret).status_code == 401


def test_a_token_without_the_scope_gets_403(server: Server, client: APIClient) -> None:
    response = get(client, "/droplets", server.token("volume:read").secret)
    assert response.status_code == 403
    assert response.json()["detail"] == "This token lacks the scope droplet:read."


def test_permissions_combine(server: Server, client: APIClient) -> None:
    assert get(client, "/storage", server.token("volume:read").secret).status_code == 200
    assert get(client, "/storage", server.token("droplet:read").secret).status_code == 200
    assert get(client, "/storage", server.token("account:read").secret).status_code == 403


def test_keyward_unreachable_gets_503(server: Server, unreachable: str) -> None:
    token = server.token("droplet:read")
    with override_settings(KEYWARD_URL=unreachable):
        response = get(APIClient(), "/droplets", token.secret)
    assert response.status_code == 503
    assert response.json()["detail"]


def test_the_keyward_url_setting_wins_over_the_environment(
    server: Server, unreachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = server.token("droplet:read")
    client = APIClient()
    monkeypatch.setenv("KEYWARD_URL", unreachable)
    with override_settings(KEYWARD_URL=server.url):
        assert get(client, "/droplets", token.secret).status_code == 200
    monkeypatch.setenv("KEYWARD_URL", server.url)
    with override_settings(KEYWARD_URL=unreachable):
        assert get(client, "/droplets", token.secret).status_code == 503
    # Without the setting, the environment.
    assert get(client, "/droplets", token.secret).status_code == 200
