"""Checks keyward's answers against the OpenAPI document the running server serves.

The schema of an answer is found by walking ``paths → <path> → <method> → responses → <status>
→ content → application/json → schema`` (never by a component's name, which may change), with
every ``$ref`` resolved inside the document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_DOC_URI = "urn:keyward:openapi"


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class OpenApiChecker:
    """Validates (method, path, status, body) against the document; remembers what it saw."""

    doc: dict[str, Any]
    checked: set[tuple[str, str, int]] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self._registry: Registry = Registry().with_resource(_DOC_URI, resource)
        # Exact paths first, so /v1/tokens/self is not taken for /v1/tokens/{id}.
        templates = sorted(self.doc["paths"], key=lambda p: ("{" in p, p))
        self._paths = [
            (t, re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(t)) + "$"))
            for t in templates
        ]

    def template(self, path: str) -> str | None:
        """The document's path that ``path`` is an instance of."""
        for template, pattern in self._paths:
            if pattern.match(path):
                return template
        return None

    def problems(self, method: str, path: str, status: int, body: bytes) -> list[str]:
        """Why this answer does not conform (empty if it does); ``path`` without the query."""
        template = self.template(path)
        if template is None:
            return []  # not part of the API (a 404 for a made-up path)
        where = f"{method} {template} {status}"
        operation = self.doc["paths"][template].get(method.lower())
        if operation is None:
            return [f"{where}: the method is not documented"]
        response = operation.get("responses", {}).get(str(status))
        if response is None:
            return [f"{where}: the status is not documented"]
        self.checked.add((method, template, status))
        content = response.get("content") or {}
        if "application/json" not in content:
            return [] if not body else [f"{where}: a body where the document has none"]
        schema_pointer = _pointer(
            "paths", template, method.lower(), "responses", str(status), "content",
            "application/json", "schema",
        )
        try:
            instance = json.loads(body)
        except ValueError:
            return [f"{where}: the body is not JSON: {body[:200]!r}"]
        validator = Draft202012Validator(
            {"$ref": f"{_DOC_URI}#/{schema_pointer}"},
            registry=self._registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        return [
            f"{where}: {error.message} at {'/'.join(map(str, error.absolute_path)) or 'the root'}"
            for error in validator.iter_errors(instance)
        ]
