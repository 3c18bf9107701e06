"""Security headers on what the FastAPI app answers: a strict Content-Security-Policy on
HTML pages, `nosniff` and no Referer on everything.

The pages need nothing but their own origin: the catalogue's script and stylesheet are
files under /static, the rollout form fetches the registry's own API, the fleet chart is
inline SVG markup (no script, no style attribute), and /api/docs runs Swagger UI from
files the registry serves (web.py). So no inline script or style is allowed, nothing may
frame a page (the rollout form holds a pasted token: no clickjacking), forms post only
here, and `<base>` and plugins are off. `img-src data:` is for Swagger UI's stylesheet,
which draws its icons as data: SVGs.

The public tree (manifests, images, keyrings) is answered in front of the app
(tree.py) and gets none of these: sysupdate fetches those files, and their responses stay
exactly what they were. Headers a response already carries are left as they are.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Every answer of the app: a browser never guesses a type (a JSON detail or a stored
# description rendered as HTML), and the catalogue's links to project homepages do not
# tell those sites which page (and which choices) the reader came from.
ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
HTML_ONLY = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),)


class SecurityHeaders:
    """Pure ASGI (no BaseHTTPMiddleware: streamed bodies and uploads pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {key.lower() for key, _ in headers}
                html = any(
                    key.lower() == b"content-type" and value.lower().startswith(b"text/html")
                    for key, value in headers
                )
                extra = ALWAYS + HTML_ONLY if html else ALWAYS
                headers.extend((key, value) for key, value in extra if key not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
