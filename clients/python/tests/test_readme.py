"""The README's first example runs as written (against the test server)."""

import re

import pytest

from conftest import REPO, Server


def test_the_five_line_example_runs(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (REPO / "clients/python/README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    assert example is not None
    code = example.group(1).replace("http://127.0.0.1:8080", server.url)
    assert len(code.strip().splitlines()) == 5
    token = server.token("droplet:read")
    exec(code, {"token": token.secret, "client_ip": "192.0.2.1"})
    assert capsys.readouterr().out.startswith("alice ('droplet:read',)")
