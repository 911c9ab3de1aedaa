"""Who may use the served app, and what the server says when it turns a request away.

The login comes from ``--auth USER:PASS`` or ``$SUPERLORA_AUTH`` (which keeps the password out of shell
history); a host other machines can reach needs one, unless ``--insecure-no-auth`` says otherwise. These
checks run before the model loads. ``RequestLog`` is an ASGI middleware giving every refused request one
log line: Gradio answers a wrong login, a forbidden file or an oversized upload silently, and uvicorn
prints a page of traceback for a request that makes a route raise (an unknown API name, a client that
hangs up mid-upload). Nothing here imports Gradio.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any

from superlora.errors import SuperloraError

AUTH_ENV = "SUPERLORA_AUTH"
REASON = "superlora.refusal"  # scope key: why a route refused the request, for its log line
log = logging.getLogger("superlora.app")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def parse_login(value: str, source: str) -> tuple[str, str]:
    """``USER:PASS`` split at the first colon (a password may contain more).

    The message names where the value came from but never repeats it: it may hold a password.
    """
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        raise SuperloraError(f"{source} must be USER:PASS with a non-empty user and password")
    return user.strip(), password  # Gradio strips the user name typed at the login form too


def login_from(flag: str | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The login to require: ``--auth`` wins over ``$SUPERLORA_AUTH``; None when neither is set (or it is empty)."""
    if flag is not None:
        return parse_login(flag, "--auth")
    value = environ.get(AUTH_ENV)
    return parse_login(value, f"${AUTH_ENV}") if value else None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_exposure(host: str, login: tuple[str, str] | None, insecure_no_auth: bool) -> None:
    """Refuse to serve a reachable host without a login, unless the user said so explicitly."""
    if login is None and not insecure_no_auth and not is_loopback(host):
        raise SuperloraError(
            f"--host {host} lets other machines use the app: require a login with --auth USER:PASS "
            f"(or ${AUTH_ENV}=USER:PASS), or pass --insecure-no-auth to serve it to anyone who can reach it"
        )


def one_line(text: str, limit: int = 200) -> str:
    """``text`` with control characters escaped and cut at ``limit``: a request path cannot forge log lines."""
    safe = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def describe(scope: Mapping[str, Any]) -> str:
    """``METHOD /path from HOST`` for a log line; never the query string (it may carry a token)."""
    client = scope.get("client")
    where = f" from {client[0]}" if client else ""
    return f"{scope.get('method', '?')} {one_line(scope.get('path', ''))}{where}"


def refusal_line(scope: Mapping[str, Any], status: int) -> str:
    """What a refused request gets in the log: its route, the status and what it means (for a login, and
    whatever reason a route left under ``REASON`` in the scope, as the OpenAI-compatible API does)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "refused"
    hint = " (wrong user or password)" if status == 400 and scope.get("path", "").rstrip("/") == "/login" else ""
    if scope.get(REASON):
        hint = f" ({one_line(str(scope[REASON]))})"
    return f"refused {describe(scope)}: {status} {phrase}{hint}"


def failure_line(scope: Mapping[str, Any], exc: BaseException) -> str:
    """What a request whose route raised gets in the log, instead of uvicorn's traceback."""
    if type(exc).__name__ == "ClientDisconnect":  # starlette's, raised when the client hangs up mid-body
        return f"dropped {describe(scope)}: the client disconnected"
    cause = f" (after {type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
    return f"failed {describe(scope)}: {type(exc).__name__}: {one_line(str(exc) + cause, 300)}"


class RequestLog:
    """ASGI middleware: one WARNING line per refused (4xx) or failed request; the traceback only at DEBUG.

    A 4xx is logged when its response starts, before the client can see it. A route that raises gets a
    plain 500 (or its started response is ended), so uvicorn has nothing left to print.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = finished = False

        async def watched(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
                if 400 <= message["status"] < 500:
                    log.warning(refusal_line(scope, message["status"]))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            log.warning(failure_line(scope, exc))
            log.debug("traceback of the failed request", exc_info=exc)
            await _end_response(send, started, finished)


async def _end_response(send: Send, started: bool, finished: bool) -> None:
    """Answer 500 if nothing was sent yet, else close the started body; a gone client is not an error."""
    try:
        if not started:
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": b"Internal Server Error"})
        elif not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except (OSError, RuntimeError):
        pass
