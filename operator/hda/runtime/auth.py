"""The bearer token of ingest and subscribe: from the Authorization header, and from the query
string (`?token=`) only when the spec allows it (browsers' WebSocket cannot set headers, but URLs
end up in access logs and browser history, so it is off by default)."""

from __future__ import annotations

import hmac
import os

from aiohttp import web

from hda.api.consts import ENV_INGEST_TOKEN

QUERY_TOKEN_PARAMETER = "token"  # noqa: S105 (a parameter name, not a secret)
REFUSAL_HEADERS = {"WWW-Authenticate": "Bearer"}


def tokens_from_environment() -> list[str]:
    """HDA_INGEST_TOKEN, comma-separated for several (a rotation accepts old and new)."""
    return [t.strip() for t in os.environ.get(ENV_INGEST_TOKEN, "").split(",") if t.strip()]


class BearerTokens:
    def __init__(self, tokens: list[str], *, accept_in_query: bool) -> None:
        self.tokens = [t.encode() for t in tokens if t]
        self.accept_in_query = accept_in_query

    def authorized(self, request: web.Request) -> bool:
        if not self.tokens:
            return True
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered = header[7:]
        elif self.accept_in_query:
            offered = request.query.get(QUERY_TOKEN_PARAMETER, "")
        else:
            return False
        offered_bytes = offered.encode()
        return any(hmac.compare_digest(offered_bytes, token) for token in self.tokens)

    def refusal_message(self) -> str:
        where = "an Authorization: Bearer header" + (
            f" or ?{QUERY_TOKEN_PARAMETER}=" if self.accept_in_query else ""
        )
        return f"missing or wrong bearer token (send it in {where})"

    def refusal(self) -> web.Response:
        return web.json_response(
            {"error": self.refusal_message()}, status=401, headers=REFUSAL_HEADERS
        )

    def outgoing_headers(self) -> dict[str, str]:
        """What this process sends to its peers (the first token)."""
        return {"Authorization": f"Bearer {self.tokens[0].decode()}"} if self.tokens else {}
