"""The exceptions the client raises."""

from __future__ import annotations


class KeywardError(Exception):
    """Base of every exception raised by this package."""


class Unavailable(KeywardError):
    """keyward could not give an answer: unreachable, timed out, answered 5xx or something
    unparseable. Fail closed: treat the request as refused (the integrations answer 503)."""


class ApiError(KeywardError):
    """keyward refused a management request with a 4xx ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"keyward answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
