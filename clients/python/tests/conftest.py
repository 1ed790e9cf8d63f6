"""Starts the real ``keyward`` binary for the session and checks every answer it gives these
tests against its own ``/openapi.json``.

``KEYWARD_BIN`` names the binary (default ``<repo>/target/debug/keyward``, built by
``cargo test --workspace``); nothing is built here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django
import httpx
import pytest
from django.conf import settings

from openapi_check import OpenApiChecker

REPO = Path(__file__).resolve().parents[3]


def pytest_configure(config: pytest.Config) -> None:
    # The small DRF project of tests/drf_project; KEYWARD_URL is set per test.
    settings.configure(
        DEBUG=False,
        SECRET_KEY="keyward-client-tests",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="drf_project.urls",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        MIDDLEWARE=[],
        USE_TZ=True,
    )
    django.setup()


@dataclass
class Issued:
    """A token made with the command line."""

    id: str
    secret: str

    def __repr__(self) -> str:
        return f"Issued({self.id!r})"


@dataclass
class Server:
    """A running keyward: its URL, and its command line on the same data directory."""

    url: str
    bin: str
    data: Path
    checker: OpenApiChecker

    def cli(self, *args: str, stdin: str | None = None) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
        done = subprocess.run(
            [self.bin, "--data-dir", str(self.data), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"keyward {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def token(self, *scopes: str, user: str = "alice", expires: str = "1d") -> Issued:
        """A new token of ``user`` with ``scopes``."""
        args = ["token", "create", "--user", user, "--name", "test", "--expires", expires]
        for scope in scopes:
            args += ["--scope", scope]
        issued = json.loads(self.cli(*args, "--json"))
        return Issued(id=issued["token"]["id"], secret=issued["secret"])

    def revoke(self, token: Issued) -> None:
        self.cli("token", "revoke", token.id, "--reason", "test")


def _keyward_bin() -> str:
    path = os.environ.get("KEYWARD_BIN") or str(REPO / "target" / "debug" / "keyward")
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"no keyward binary at {path}: build it (cargo build -p keyward) or set KEYWARD_BIN"
        )
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("keyward")
    data = work / "data"
    bin = _keyward_bin()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    stdout = open(work / "stdout", "w+")
    stderr = open(work / "stderr", "w+")
    # Port 0: keyward binds a free port and prints "listening on <url>" once it listens.
    process = subprocess.Popen(
        [bin, "--data-dir", str(data), "serve", "--listen", "127.0.0.1:0"],
        stdout=stdout,
        stderr=stderr,
        env=env,
    )
    try:
        url = _wait_listening(process, work / "stdout", work / "stderr")
        _wait_ready(url)
        doc = httpx.get(f"{url}/openapi.json").json()
        srv = Server(url=url, bin=bin, data=data, checker=OpenApiChecker(doc))
        _checker_seen.append(srv.checker)
        srv.cli("user", "add", "alice")
        srv.cli("user", "add", "bob")
        with pytest.MonkeyPatch.context() as patch:
            _check_every_answer(patch, srv)
            yield srv
        assert not srv.checker.violations, "\n".join(srv.checker.violations)
        assert not any("panicked" in line for line in open(work / "stderr"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stdout.close()
        stderr.close()


def _wait_listening(process: subprocess.Popen[Any], stdout: Path, stderr: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in stdout.read_text().splitlines():
            if line.startswith("listening on "):
                return line.removeprefix("listening on ").strip()
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"keyward did not start:\n{stderr.read_text()}")


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"keyward at {url} never became ready")


def _check_every_answer(patch: pytest.MonkeyPatch, srv: Server) -> None:
    """Wraps httpx's transports so each answer from the server is checked as it arrives; a
    non-conforming answer fails the test that received it (and the session, at the end)."""
    base = httpx.URL(srv.url)

    def check(request: httpx.Request, response: httpx.Response) -> None:
        if request.url.host != base.host or request.url.port != base.port:
            return
        problems = srv.checker.problems(
            request.method, request.url.path, response.status_code, response.content
        )
        if problems:
            srv.checker.violations.extend(problems)
            raise AssertionError("keyward's answer drifted from /openapi.json: " + "; ".join(problems))

    sync_send = httpx.HTTPTransport.handle_request
    async_send = httpx.AsyncHTTPTransport.handle_async_request

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        response = sync_send(self, request)
        response.read()
        check(request, response)
        return response

    async def handle_async_request(
        self: httpx.AsyncHTTPTransport, request: httpx.Request
    ) -> httpx.Response:
        response = await async_send(self, request)
        await response.aread()
        check(request, response)
        return response

    patch.setattr(httpx.HTTPTransport, "handle_request", handle_request)
    patch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle_async_request)


@pytest.fixture
def url(server: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's URL, also as $KEYWARD_URL."""
    monkeypatch.setenv("KEYWARD_URL", server.url)
    return server.url


@pytest.fixture(scope="session")
def unreachable() -> str:
    """A URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Which documented answers the run checked against /openapi.json."""
    checker = _checker_seen[0] if _checker_seen else None
    if checker is not None:
        seen = ", ".join(f"{m} {p} {s}" for m, p, s in sorted(checker.checked))
        terminalreporter.write_line(f"answers checked against /openapi.json: {seen}")


_checker_seen: list[OpenApiChecker] = []
