"""Management helpers: create, list, get, regenerate, revoke through the HTTP API."""

from __future__ import annotations

import pytest

import keyward
from conftest import Server


@pytest.fixture
def admin(server: Server, url: str) -> keyward.Management:
    """bob's management token (bob's tokens only: every test sees a known list)."""
    token = server.token("tokens:*", "droplet:*", user="bob", expires="2d")
    return keyward.Management(token=token.secret)


def test_create_verify_list_regenerate_revoke(server: Server, admin: keyward.Management) -> None:
    kw = keyward.Keyward(server.url, ttl=0)
    issued = admin.create("ci", ["droplet:read"], expires="1d")
    assert issued.token.name == "ci" and issued.token.scopes == ("droplet:read",)
    assert issued.token.state == "active" and issued.token.id.startswith("tok_")
    assert issued.secret not in repr(issued)
    assert kw.verify(issued.secret, ["droplet:read"]).active

    more = [admin.create(f"extra-{i}", ["droplet:read"]) for i in range(3)]
    listed = [t.id for t in admin.list(page_size=2)]  # follows `next` across pages
    assert {issued.token.id, *(m.token.id for m in more)} <= set(listed)
    assert len(listed) == len(set(listed))
    first = admin.list_page(limit=2)
    assert len(first.tokens) == 2 and first.next is not None
    assert admin.get(issued.token.id) == admin.get(issued.token.id.lower())

    renewed = admin.regenerate(issued.token.id)
    assert renewed.token.id == issued.token.id and renewed.secret != issued.secret
    assert kw.verify(issued.secret).reason == "revoked"
    assert kw.verify(renewed.secret).active
    graced = admin.regenerate(issued.token.id, grace_period="10m")
    assert kw.verify(renewed.secret).active and kw.verify(graced.secret).active

    revoked = admin.revoke(issued.token.id, reason="laptop lost")
    assert revoked.state == "revoked" and revoked.revoke_reason == "laptop lost"
    assert revoked.revoked_at is not None
    assert kw.verify(graced.secret).reason == "revoked"
    assert admin.revoke(more[0].token.id).state == "revoked"


def test_refusals_raise_api_error_with_keywards_code(
    server: Server, admin: keyward.Management
) -> None:
    with pytest.raises(keyward.ApiError) as refused:
        admin.create("too much", ["volume:read"])  # more than the caller holds
    assert refused.value.status == 403 and refused.value.code == "scope_exceeds_caller"
    with pytest.raises(keyward.ApiError) as missing:
        admin.get("tok_01JD0000000000000000000000")
    assert missing.value.status == 404
    alices = server.token("droplet:read")
    with pytest.raises(keyward.ApiError) as foreign:
        admin.revoke(alices.id)  # another user's token: as if it did not exist
    assert foreign.value.status == 404
    with pytest.raises(keyward.ApiError) as bad:
        admin.create("x", ["droplet:read"], expires="soon")
    assert bad.value.status == 400
    stranger = keyward.Management(server.url, token=server.token("droplet:read").secret)
    with pytest.raises(keyward.ApiError) as unscoped:
        stranger.list_page()
    assert unscoped.value.status == 403
    nobody = keyward.Management(server.url, token="garbage")
    with pytest.raises(keyward.ApiError) as unauthenticated:
        nobody.list_page()
    assert unauthenticated.value.status == 401


def test_unreachable_keyward_raises_unavailable(unreachable: str) -> None:
    with pytest.raises(keyward.Unavailable):
        keyward.Management(unreachable, token="kwp_x").list_page()
