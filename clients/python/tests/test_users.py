"""A platform's backend managing users and minting their tokens through ``Management``, acting as
an admin service account's token made with the command line."""

from __future__ import annotations

import itertools

import pytest

import keyward
from conftest import Server

BACKEND_SCOPES = ("users:read", "users:create", "users:update", "users:delete", "tokens:issue")
_names = itertools.count()


def unique(stem: str) -> str:
    """A user name (and external id) no other test of the session uses."""
    return f"{stem}-{next(_names)}"


@pytest.fixture(scope="module")
def platform(server: Server) -> str:
    """The admin service account a platform's backend acts as."""
    server.cli("user", "add", "platform", "--service", "--admin")
    return "platform"


@pytest.fixture
def backend(server: Server, platform: str) -> keyward.Management:
    token = server.token(*BACKEND_SCOPES, user=platform, expires="2d")
    return keyward.Management(server.url, token=token.secret)


def test_a_platform_user_from_creation_to_deletion(
    server: Server, backend: keyward.Management
) -> None:
    kw = keyward.Keyward(server.url, ttl=0)
    name = unique("carol")
    carol = backend.create_user(name, external_id=f"acct-{name}", email="carol@example.com")
    assert carol.id.startswith("usr_") and carol.name == name
    assert carol.external_id == f"acct-{name}" and carol.email == "carol@example.com"
    assert carol.kind == "person" and carol.admin is False and carol.disabled_at is None
    assert backend.find_user_by_external_id(f"acct-{name}") == carol
    assert backend.get_user(carol.id) == carol

    issued = backend.issue_token(carol.id, "cli", ["droplet:read"], expires="1d")
    assert issued.token.owner == carol.id and issued.token.scopes == ("droplet:read",)
    assert issued.secret not in repr(issued)
    answer = kw.verify(issued.secret, ["droplet:read"])
    assert answer.active and answer.owner == keyward.Owner(carol.id, name, f"acct-{name}")

    moved = backend.update_user(carol.id, external_id=f"acct2-{name}", email=None)
    assert moved.external_id == f"acct2-{name}" and moved.email is None and moved.name == name
    assert kw.verify(issued.secret).owner == keyward.Owner(carol.id, name, f"acct2-{name}")
    assert backend.find_user_by_external_id(f"acct-{name}") is None

    backend.delete_user(carol.id)
    assert kw.verify(issued.secret).reason == "revoked"
    with pytest.raises(keyward.ApiError) as gone:
        backend.get_user(carol.id)
    assert gone.value.status == 404
    assert backend.find_user_by_external_id(f"acct2-{name}") is None


def test_a_disabled_users_tokens_are_refused_until_enabled(
    server: Server, backend: keyward.Management
) -> None:
    kw = keyward.Keyward(server.url, ttl=0)
    robot = backend.create_user(unique("robot"), kind="service")
    assert robot.kind == "service" and robot.external_id is None
    issued = backend.issue_token(robot.id, "deploy", ["droplet:*"])
    disabled = backend.update_user(robot.id, disabled=True)
    assert disabled.disabled_at is not None
    assert kw.verify(issued.secret).reason == "owner_disabled"
    assert backend.update_user(robot.id, disabled=False).disabled_at is None
    assert kw.verify(issued.secret, ["droplet:read"]).active


def test_a_token_without_the_scope_gets_insufficient_scope(
    server: Server, platform: str
) -> None:
    reader = keyward.Management(
        server.url, token=server.token("users:read", user=platform).secret
    )
    with pytest.raises(keyward.ApiError) as refused:
        reader.create_user(unique("dave"))
    assert refused.value.status == 403 and refused.value.code == "insufficient_scope"
    assert reader.list_users(limit=1).users  # what it holds, it may do


def test_a_taken_name_or_external_id_is_a_conflict(backend: keyward.Management) -> None:
    name = unique("erin")
    backend.create_user(name, external_id=f"acct-{name}")
    with pytest.raises(keyward.ApiError) as same_name:
        backend.create_user(name)
    assert same_name.value.status == 409 and same_name.value.code == "conflict"
    with pytest.raises(keyward.ApiError) as same_external_id:
        backend.create_user(unique("frank"), external_id=f"acct-{name}")
    assert same_external_id.value.status == 409


def test_listing_follows_next_across_pages(backend: keyward.Management) -> None:
    made = {backend.create_user(unique("page")).id for _ in range(5)}
    first = backend.list_users(limit=2)
    assert len(first.users) == 2 and first.next is not None
    second = backend.list_users(limit=2, before=first.next)
    assert not {u.id for u in first.users} & {u.id for u in second.users}

    listed = list(backend.iter_users(page_size=2))
    ids = [u.id for u in listed]
    assert made <= set(ids) and len(ids) == len(set(ids))
    created = [u.created_at for u in listed]
    assert created == sorted(created, reverse=True)  # newest first


def test_unreachable_keyward_raises_unavailable(unreachable: str) -> None:
    with pytest.raises(keyward.Unavailable):
        keyward.Management(unreachable, token="kwp_x").list_users()
