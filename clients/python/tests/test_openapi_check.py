"""The checker itself: it must find drift, or the conformance checks prove nothing."""

from conftest import Server


def test_the_checker_refuses_an_answer_that_drifted(server: Server) -> None:
    check = server.checker.problems
    assert check("POST", "/v1/verify", 200, b'{"active": false, "reason": "revoked"}') == []
    assert check("POST", "/v1/verify", 200, b'{"active": false, "reason": "lost"}')
    assert check("POST", "/v1/verify", 200, b'{"active": true, "owner": {}}')
    assert check("POST", "/v1/verify", 418, b"{}")
    assert check("GET", "/v1/tokens/tok_1", 200, b'{"token": {"id": "tok_1"}}')
    assert server.checker.template("/v1/tokens/self") == "/v1/tokens/self"
    assert server.checker.template("/v1/tokens/tok_1/regenerate") == "/v1/tokens/{id}/regenerate"


def test_the_answers_the_clients_read_were_checked(server: Server) -> None:
    # Runs last in its file order only by chance; what matters is that checking happens at all.
    import keyward

    keyward.Keyward(server.url, ttl=0).verify(server.token("droplet:read").secret)
    assert ("POST", "/v1/verify", 200) in server.checker.checked
