"""The review server's gate and headers: ASGI wrappers around the whole application.

`TokenGate` lets a request through only with the access token: once in the URL (`?token=`),
answered with a redirect that drops it from the address and sets an HttpOnly, SameSite=Strict
cookie, then by that cookie. Tokens are compared in constant time. `SecurityHeaders` puts a
strict Content-Security-Policy and the other headers on every response, errors included.
"""

from __future__ import annotations

import hmac
import html
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The player compiles its terminal emulator from WebAssembly: 'wasm-unsafe-eval' allows that
# and nothing else (no eval, no inline script or style attribute from markup).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self'; font-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


class SecurityHeaders:
    """Add the security headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((n, v) for n, v in HEADERS if n not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


def same_token(given: str, token: str) -> bool:
    """Whether `given` is the token, compared in constant time."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


async def _page(send: Send, status: int, title: str, message: str,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1><p>"
            f"{html.escape(message)}</p></body></html>").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class TokenGate:
    """Refuse every request without the access token (401) or with a wrong one (403)."""

    def __init__(self, app: ASGIApp, token: str, cookie: str, secure: bool) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True)
        given = [value for name, value in query if name == "token"]
        if given:
            if not all(same_token(value, self.token) for value in given):
                await _page(send, 403, "Wrong access token",
                            "The token in this address is not the one this server printed "
                            "when it started. Open the address it printed.")
                return
            await self._admit(scope, send, [(n, v) for n, v in query if n != "token"])
            return
        if same_token(self._cookie(scope), self.token):
            await self.app(scope, receive, send)
            return
        await _page(send, 401, "Access token needed",
                    "This server serves only the browser that opened the address it printed "
                    "when it started (the one with ?token=). Open that address.")

    def _cookie(self, scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name != b"cookie":
                continue
            text: str = bytes(value).decode("latin-1")
            for pair in text.split(";"):
                key, _, given = pair.strip().partition("=")
                if key == self.cookie:
                    return given
        return ""

    async def _admit(self, scope: Scope, send: Send, rest: list[tuple[str, str]]) -> None:
        """Set the cookie and send the browser to the same address without the token."""
        path = "/" + str(scope.get("path", "/")).lstrip("/")  # never //host: no open redirect
        location = quote(path) + (f"?{urlencode(rest)}" if rest else "")
        cookie = (f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                  + ("; Secure" if self.secure else ""))
        await _page(send, 303, "Signed in", "Continue to the recordings.",
                    [(b"location", location.encode()), (b"set-cookie", cookie.encode())])
