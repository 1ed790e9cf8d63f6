"""``Keyward`` and ``AsyncKeyward`` against the real server: answers, cache, failing closed."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

import keyward
from conftest import Server


def test_an_active_token_is_answered_with_its_owner_scopes_and_expiry(
    server: Server, url: str
) -> None:
    token = server.token("droplet:read", "volume:*")
    with keyward.Keyward(url) as kw:
        answer = kw.verify(token.secret, scopes=["droplet:read"], ip="192.0.2.7")
    assert answer.active and answer.reason is None
    assert answer.token_id == answer.id == token.id
    assert answer.owner is not None and answer.owner.name == "alice"
    assert answer.owner.id.startswith("usr_")
    assert answer.owner.external_id is None  # alice was added without one
    assert set(answer.scopes) == {"droplet:read", "volume:*"}
    assert answer.expires_at is not None and answer.expires_at.tzinfo is not None
    assert timedelta(hours=23) < answer.expires_at - datetime.now(timezone.utc) <= timedelta(days=1)


@pytest.mark.parametrize(
    ("held", "asked", "active"),
    [
        (["droplet:*"], ["droplet:read"], True),
        (["*:read"], ["droplet:read", "volume:read"], True),
        (["droplet:read"], ["droplet:delete"], False),
        (["droplet:read"], ["droplet:read", "volume:read"], False),
    ],
)
def test_scopes_are_decided_by_keyward_wildcards_included(
    server: Server, url: str, held: list[str], asked: list[str], active: bool
) -> None:
    token = server.token(*held)
    answer = keyward.Keyward(url).verify(token.secret, asked)
    assert answer.active is active
    if not active:
        assert answer.reason == "insufficient_scope"


def test_refusals_carry_keywards_reason(server: Server, url: str) -> None:
    kw = keyward.Keyward(url, ttl=0)
    revoked = server.token("droplet:read")
    server.revoke(revoked)
    expired = server.token("droplet:read", expires="1s")
    unknown = server.token("droplet:read")
    # The same prefix, body and a valid checksum, but never issued: flip a body character and
    # recompute the checksum.
    from keyward._format import CHECKSUM_LEN, _checksum

    body = unknown.secret[: -CHECKSUM_LEN - 1] + ("A" if unknown.secret[-7] != "A" else "B")
    forged = body + _checksum(body.encode())
    assert keyward.is_well_formed(forged)
    assert kw.verify(revoked.secret).reason == "revoked"
    assert kw.verify(forged).reason == "unknown"
    time.sleep(1.1)  # a real server, a real clock: the shortest expiry keyward accepts is 1 s
    assert kw.verify(expired.secret).reason == "expired"
    assert kw.verify(revoked.secret).reason in keyward.REASONS


def test_the_offline_format_check_agrees_with_keyward(server: Server, unreachable: str) -> None:
    token = server.token("droplet:read")
    assert keyward.is_well_formed(token.secret)
    server.cli("token", "check", token.secret)
    # Garbage costs no round trip: a verifier for an unreachable server still refuses it.
    kw = keyward.Keyward(unreachable)
    for bad in [
        "",
        "garbage",
        token.secret[:-1] + ("0" if token.secret[-1] != "0" else "1"),  # checksum
        token.secret[:-1],  # truncated
        "K" + token.secret[1:],  # prefix not lowercase
        token.secret + "x",
    ]:
        assert not keyward.is_well_formed(bad)
        assert kw.verify(bad) == keyward.Verification(active=False, reason="malformed")
        if bad:  # keyward's own check refuses it too
            with pytest.raises(RuntimeError):
                server.cli("token", "check", bad)


def test_a_positive_answer_is_cached_for_the_ttl_and_refusals_never(
    server: Server, url: str
) -> None:
    token = server.token("droplet:read")
    cached = keyward.Keyward(url)  # the default: 5 s, like the Rust RemoteVerifier
    uncached = keyward.Keyward(url, ttl=0)
    assert cached.cache.ttl == keyward.DEFAULT_TTL == 5.0
    assert cached.verify(token.secret, ["droplet:read"]).active
    assert uncached.verify(token.secret, ["droplet:read"]).active
    server.revoke(token)
    # Within the TTL the revoked token still passes here; without a cache it fails at once.
    assert cached.verify(token.secret, ["droplet:read"]).active
    assert uncached.verify(token.secret, ["droplet:read"]).reason == "revoked"
    # The cache is keyed on the scopes asked too: another set is a new question, answered now.
    assert cached.verify(token.secret).reason == "revoked"
    assert len(uncached.cache) == 0
    # Only the one positive answer is kept, and no key holds the token in clear.
    assert len(cached.cache) == 1
    ((digest, scopes),) = list(cached.cache._entries)
    assert token.secret.encode() not in digest and scopes == ("droplet:read",)


def test_the_cache_expires_entries_drops_the_oldest_and_refuses_expired_tokens() -> None:
    clock = [0.0]
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    cache = keyward.AnswerCache(5, 2, monotonic=lambda: clock[0], now=lambda: now[0])
    active = keyward.Verification(
        active=True,
        token_id="tok_1",
        owner=keyward.Owner("usr_1", "alice"),
        scopes=("droplet:read",),
        expires_at=now[0] + timedelta(seconds=60),
    )
    a, b, c = (cache.key(t, ()) for t in ("kwp_a", "kwp_b", "kwp_c"))
    cache.put(a, active)
    cache.put(b, keyward.Verification.refused("revoked"))
    assert cache.get(a) == active and cache.get(b) is None
    clock[0] = 4.9
    assert cache.get(a) == active
    clock[0] = 5.0
    assert cache.get(a) is None
    cache.put(a, active)
    cache.put(b, active)
    cache.get(a)  # a is now the most recently used
    cache.put(c, active)
    assert cache.get(b) is None and cache.get(a) == active and cache.get(c) == active
    now[0] += timedelta(seconds=60)
    assert cache.get(a) == keyward.Verification.refused("expired")
    assert keyward.AnswerCache(0).enabled is False


def test_async_keyward_answers_the_same(server: Server, url: str) -> None:
    token = server.token("droplet:*")
    kw = keyward.AsyncKeyward(url)

    async def ask() -> list[keyward.Verification]:
        return list(
            await asyncio.gather(
                kw.verify(token.secret, ["droplet:read"]),
                kw.verify(token.secret, ["volume:read"]),
                kw.verify("garbage"),
            )
        )

    ok, lacking, malformed = asyncio.run(ask())
    assert ok.active and ok.owner == keyward.Owner(ok.owner.id, "alice")  # type: ignore[union-attr]
    assert lacking.reason == "insufficient_scope"
    assert malformed.reason == "malformed"
    # Another event loop (as each TestClient runs one) gets a pool of its own.
    server.revoke(token)
    assert asyncio.run(kw.verify(token.secret, ["droplet:read"])).active  # cached
    assert asyncio.run(kw.verify(token.secret)).reason == "revoked"

    async def close() -> None:
        await kw.aclose()

    asyncio.run(close())


def test_async_keyward_fails_closed(unreachable: str) -> None:
    kw = keyward.AsyncKeyward(unreachable)
    token = _well_formed()
    with pytest.raises(keyward.Unavailable):
        asyncio.run(kw.verify(token))


def _well_formed() -> str:
    from keyward._format import _checksum

    head = "kwp_" + "a" * 43
    return head + _checksum(head.encode())


def test_the_url_comes_from_keyward_url_unless_given(
    server: Server, url: str, unreachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = server.token("droplet:read")
    assert keyward.Keyward().url == url
    assert keyward.AsyncKeyward().url == url
    assert keyward.Keyward().verify(token.secret).active
    assert keyward.Keyward(unreachable).url == unreachable
    monkeypatch.delenv("KEYWARD_URL")
    with pytest.raises(keyward.KeywardError, match="KEYWARD_URL"):
        keyward.Keyward()
    with pytest.raises(keyward.KeywardError):
        keyward.Keyward("ftp://example.invalid")


def test_unreachable_keyward_raises_unavailable(unreachable: str) -> None:
    with pytest.raises(keyward.Unavailable, match="unreachable"):
        keyward.Keyward(unreachable).verify(_well_formed())


def test_a_slow_keyward_times_out_and_raises_unavailable() -> None:
    # A socket that accepts connections (the kernel's backlog) and never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        kw = keyward.Keyward(f"http://127.0.0.1:{port}", timeout=0.3)
        with pytest.raises(keyward.Unavailable):
            kw.verify(_well_formed())


@pytest.fixture
def fake_keyward() -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    """A server answering /v1/verify with whatever the test puts in the list."""
    answers: list[tuple[int, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            status, body = answers.pop(0)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", answers
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, b'{"error": {"code": "unavailable", "message": "store"}}'),
        (500, b"oops"),
        (404, b'{"error": {"code": "not_found", "message": "no"}}'),
        (200, b"not json"),
        (200, b'{"active": "yes"}'),
        (200, b'{"active": true}'),
        (200, b'{"active": true, "token_id": "tok_1", "owner": {"id": "u"}, "scopes": []}'),
        (
            200,
            b'{"active": true, "token_id": "tok_1", "owner": {"id": "u", "name": "n", '
            b'"external_id": 42}, "scopes": []}',
        ),
        (200, b'{"active": false}'),
        (200, b"[]"),
    ],
)
def test_anything_but_a_verification_answer_raises_unavailable(
    fake_keyward: tuple[str, list[tuple[int, bytes]]], status: int, body: bytes
) -> None:
    base, answers = fake_keyward
    answers.append((status, body))
    with pytest.raises(keyward.Unavailable):
        keyward.Keyward(base).verify(_well_formed())


@pytest.mark.parametrize(
    ("owner", "external_id"),
    [
        (b'{"id": "usr_1", "name": "alice", "external_id": "acct-42"}', "acct-42"),
        (b'{"id": "usr_1", "name": "alice", "external_id": null}', None),
        # A keyward older than external ids sends no such field.
        (b'{"id": "usr_1", "name": "alice"}', None),
    ],
)
def test_the_owners_external_id_is_read_and_may_be_absent(
    fake_keyward: tuple[str, list[tuple[int, bytes]]], owner: bytes, external_id: str | None
) -> None:
    base, answers = fake_keyward
    answers.append(
        (200, b'{"active": true, "token_id": "tok_1", "owner": ' + owner + b', "scopes": []}')
    )
    answer = keyward.Keyward(base).verify(_well_formed())
    assert answer.owner == keyward.Owner("usr_1", "alice", external_id)


def test_bad_scopes_and_addresses_are_the_callers_bug(url: str) -> None:
    kw = keyward.Keyward(url)
    with pytest.raises(ValueError):
        kw.verify(_well_formed(), ["droplet read"])
    with pytest.raises(TypeError):
        kw.verify(_well_formed(), "droplet:read")
    with pytest.raises(ValueError):
        kw.verify(_well_formed(), ip="testclient")
