"""An OpenAI-compatible HTTP API over the served model and its adapters: ``superlora serve --api`` / ``--api-only``.

Any OpenAI client (the ``openai`` package, curl, LangChain...) can then use the base model and each adapter:
``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed (server-sent events
ending ``data: [DONE]``) or not. The model ids are the app's own: ``base`` and each adapter's name.

Nothing here generates text itself. A chat request becomes the chat tab's prompt (``generate.chat_job``: the
template and system prompt the adapter's run recorded), a completion the Completion tab's (``completion_job``:
the run's completion template), and both run through ``generate.stream`` under the state's model lock, the
lock every tab holds too: the API and the web UI never run the model at the same time, and a greedy reply is
the app's own reply token for token. On top of that the API admits at most ``limits.queue_size`` requests
waiting or running (429 beyond), as Gradio's queue does for the UI.

The login is the app's (``--auth`` / ``$SUPERLORA_AUTH``). Browsers get Gradio's login form; API clients send
it in the ``Authorization`` header, as ``Bearer USER:PASS`` (what the openai client sends for
``api_key="USER:PASS"``) or as basic auth (``curl -u USER:PASS``). Without a login any key is accepted.

Errors use OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``: 400 for a body that is not
JSON or has a bad field, or an input over the limits; 401 for a missing or wrong login; 404 for an unknown
model (with a did-you-mean); 413 for a body over 1 MiB; 429 when the queue is full. Each refusal is one log
line (``access.RequestLog``, with the reason this module leaves in the request's scope).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal, TypeVar

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from superlora.app import generate as gen
from superlora.app.access import REASON, RequestLog, failure_line
from superlora.app.limits import InputError
from superlora.app.state import BASE, AppState
from superlora.errors import SuperloraError, quote

log = logging.getLogger("superlora.app")

MAX_BODY_BYTES = 1 << 20  # a chat within the input limits is a few KB; refuse megabytes before parsing them
MAX_STOPS = 4  # as OpenAI's API
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed takes
CHAT_CHUNK = "chat.completion.chunk"
API_THREADS = 4  # worker threads for API requests; more requests wait for one without holding a thread
ENDPOINTS = "GET /v1/models, POST /v1/chat/completions, POST /v1/completions"


class ApiError(Exception):
    """A refused request, answered in OpenAI's error shape with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def error_response(request: Request, error: ApiError) -> JSONResponse:
    """The error as JSON; the reason also goes into the scope, for ``RequestLog``'s one line."""
    request.scope[REASON] = error.message
    headers = {"WWW-Authenticate": 'Bearer realm="superlora"'} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def input_error(exc: InputError) -> ApiError:
    """An input the app's limits refuse (too long, empty, out of range) is the client's to fix: 400."""
    message = str(exc)
    code = "context_length_exceeded" if "too long" in message else "invalid_value"
    return ApiError(400, message, code=code)


# -----------------------------------------------------------------------------
# Request bodies (unknown fields are accepted and ignored: clients send logprobs=None, user=..., and so on)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class Sampling(BaseModel):
    """The fields both endpoints share. ``None`` (JSON null) means the default, as with OpenAI."""

    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1)  # one choice per request


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class ChatBody(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # newer clients' name for max_tokens


class CompletionBody(Sampling):
    prompt: str | list[str]


Body = TypeVar("Body", bound=BaseModel)


def parse_body(kind: type[Body], data: Any) -> Body:
    """``data`` as ``kind``, or a 400 naming the first bad field."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        raise ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], param=where) from None


async def read_json(request: Request) -> Any:
    """The request's JSON body, refused (413) as soon as it passes ``MAX_BODY_BYTES``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is over {MAX_BODY_BYTES} bytes", code="body_too_large")
    try:
        data = json.loads(bytes(body))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return data


def stop_strings(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS or not all(stops):
        raise ApiError(400, f"stop: up to {MAX_STOPS} non-empty strings", param="stop")
    return stops


def split_messages(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]], str]:
    """OpenAI's message list as the chat tab holds a conversation: (system prompt, history, the new message)."""
    texts = []
    for i, message in enumerate(messages):
        parts = message.content if isinstance(message.content, list) else []
        if any(part.get("type", "text") != "text" for part in parts):
            raise ApiError(400, "only text content is supported", param=f"messages.{i}.content")
        role = "system" if message.role == "developer" else message.role
        texts.append((role, gen.message_text(message.content)))
    if texts[-1][0] != "user":
        raise ApiError(400, "the last message must be the user's", param="messages")
    system = "\n\n".join(text for role, text in texts if role == "system")
    history = [{"role": role, "content": text} for role, text in texts[:-1] if role != "system"]
    return system, history, texts[-1][1]


# -----------------------------------------------------------------------------
# The login


def presented_login(request: Request) -> tuple[str, str] | None:
    """``USER:PASS`` from ``Authorization: Bearer USER:PASS`` or ``Basic base64(USER:PASS)``."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme.lower() != "bearer":
        return None
    user, colon, password = value.partition(":")
    return (user.strip(), password) if colon else None


def check_login(request: Request, login: tuple[str, str] | None) -> None:
    """Refuse (401) a request without the login, comparing in constant time; the key is never logged."""
    if login is None:
        return
    given = presented_login(request)
    if given is None:
        raise ApiError(
            401,
            "a login is required: send Authorization: Bearer USER:PASS (the API key USER:PASS) or basic auth",
            "authentication_error",
            code="invalid_api_key",
        )
    same_user = hmac.compare_digest(given[0].encode(), login[0].encode())
    same_password = hmac.compare_digest(given[1].encode(), login[1].encode())
    if not (same_user and same_password):
        raise ApiError(401, "wrong user or password", "authentication_error", code="invalid_api_key")


# -----------------------------------------------------------------------------
# Admission and stop strings


class Gate:
    """At most ``size`` API requests waiting for the model or running; more get 429 at once, not a pile-up."""

    def __init__(self, size: int) -> None:
        self.size, self.count, self.lock = size, 0, threading.Lock()

    def enter(self) -> Callable[[], None]:
        """Take a place (or raise 429); returns the function that gives it back (once, however often called)."""
        with self.lock:
            if self.count >= self.size:
                busy = f"the server is busy: {self.count} requests are queued; try again later"
                raise ApiError(429, busy, "server_busy", code="queue_full")
            self.count += 1
        left = threading.Event()

        def leave() -> None:
            with self.lock:
                if not left.is_set():
                    left.set()
                    self.count -= 1

        return leave


class StopCut:
    """The generated pieces up to the first stop string (which is left out), streamed as they come.

    A tail that could be the start of a stop string is held back until the next piece settles it; ending
    the iteration at a stop string closes the generation, which frees the model at its next token.
    """

    def __init__(self, pieces: Iterator[str], stops: list[str]) -> None:
        self.pieces, self.stops, self.stopped = pieces, stops, False
        self.keep = max((len(s) for s in stops), default=1) - 1

    def __iter__(self) -> Iterator[str]:
        held = ""
        try:
            for piece in self.pieces:
                held += piece
                found = [i for i in (held.find(s) for s in self.stops) if i >= 0]
                if found:
                    self.stopped = True
                    if min(found):
                        yield held[: min(found)]
                    return
                if len(held) > self.keep:
                    cut = len(held) - self.keep
                    yield held[:cut]
                    held = held[cut:]
            if held:
                yield held
        finally:
            self.close()

    def close(self) -> None:
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()


_DONE = object()


async def in_thread(iterator: Iterator[str], limiter: anyio.CapacityLimiter) -> AsyncIterator[str]:
    """Each ``next`` in a worker thread: waiting for the model lock or a token never blocks the event loop."""
    while True:
        item = await anyio.to_thread.run_sync(next, iterator, _DONE, limiter=limiter)
        if item is _DONE:
            return
        yield item


class EventStream(StreamingResponse):
    """Server-sent events whose ``on_close`` runs however the response ends, even if it never started
    (a client gone before the first byte): the queue place and the generation are always given back."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


# -----------------------------------------------------------------------------
# The routes


class OpenAIApi:
    """The handlers over one state; ``router`` exposes them."""

    def __init__(self, state: AppState, login: tuple[str, str] | None = None) -> None:
        self.state, self.login = state, login
        self.gate = Gate(state.limits.queue_size)
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Worker threads of the API's own: requests blocked on the model lock never use up the shared
        thread pool that Gradio (and Starlette) run their other handlers in. Made in the event loop."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(API_THREADS)
        return self._limiter

    async def in_thread(self, fn: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(fn, limiter=self.limiter)

    def model_card(self, target: str) -> dict[str, Any]:
        card = {"id": target, "object": "model", "created": 0, "owned_by": "superlora"}
        if target == BASE:
            return card | {"root": self.state.loaded.name}
        adapter = next(a for a in self.state.adapters if a.name == target)
        template = adapter.template.kind if adapter.template else None
        return card | {"root": self.state.loaded.name, "parent": BASE, "task": adapter.task, "template": template}

    def resolve(self, name: str) -> str:
        """The target a request's ``model`` names (the base model's own name works too), or 404."""
        if name in self.state.targets:
            return name
        if name == self.state.loaded.name:
            return BASE
        close = difflib.get_close_matches(name, self.state.targets, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ApiError(
            404,
            f"the model {quote(name)} does not exist{hint} (models: {', '.join(self.state.targets)})",
            param="model",
            code="model_not_found",
        )

    async def models(self, request: Request) -> Response:
        return await self.answering(request, self._models)

    async def model(self, request: Request, model: str) -> Response:
        return await self.answering(request, self._model, model)

    async def chat(self, request: Request) -> Response:
        return await self.answering(request, self._chat)

    async def completions(self, request: Request) -> Response:
        return await self.answering(request, self._completions)

    async def unknown(self, request: Request, rest: str) -> Response:
        message = f"no endpoint {request.method} /v1/{rest}; this server has {ENDPOINTS}"
        return await self.answering(request, self._raise, ApiError(404, message, code="unknown_url"))

    async def answering(self, request: Request, handler: Callable[..., Awaitable[Response]], *args: Any) -> Response:
        """Check the login, run ``handler`` and turn every failure into OpenAI's error shape."""
        try:
            check_login(request, self.login)
            return await handler(request, *args)
        except ApiError as error:
            return error_response(request, error)
        except InputError as exc:
            return error_response(request, input_error(exc))
        except Exception as exc:  # a failed generation: one log line, and the server keeps serving
            log.warning(failure_line(request.scope, exc))
            log.debug("traceback of the failed request", exc_info=exc)
            first = (str(exc).strip().splitlines() or [""])[0]
            error = ApiError(500, f"generation failed: {type(exc).__name__}: {first}", "server_error")
            return JSONResponse(error.body(), status_code=500)

    async def _raise(self, request: Request, error: ApiError) -> Response:
        raise error

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self.model_card(t) for t in self.state.targets]})

    async def _model(self, request: Request, model: str) -> Response:
        return JSONResponse(self.model_card(self.resolve(model)))

    async def _chat(self, request: Request) -> Response:
        body = parse_body(ChatBody, await read_json(request))
        target = self.resolve(body.model)
        system, history, message = split_messages(body.messages)
        settings = self.settings(body)
        wanted = body.max_completion_tokens or body.max_tokens
        job = await self.in_thread(
            lambda: gen.chat_job(self.state, target, message, history, system, max_new_tokens=wanted, **settings)
        )
        return await self.answer(request, body, job, chat=True)

    async def _completions(self, request: Request) -> Response:
        body = parse_body(CompletionBody, await read_json(request))
        target = self.resolve(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(400, "prompt: one prompt per request", param="prompt")
        settings = self.settings(body)
        job = await self.in_thread(
            lambda: gen.completion_job(self.state, target, prompts[0], max_new_tokens=body.max_tokens, **settings)
        )
        return await self.answer(request, body, job, chat=False)

    @staticmethod
    def settings(body: Sampling) -> dict[str, Any]:
        """OpenAI's defaults (temperature 1, top_p 1); temperature 0 is greedy, as in the app."""
        temperature = 1.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        return {"temperature": temperature, "top_p": top_p, "seed": body.seed}

    async def answer(self, request: Request, body: Sampling, job: gen.Job, chat: bool) -> Response:
        """Run ``job`` once a queue place is free: one JSON answer, or a stream of chunks."""
        stops = stop_strings(body.stop)
        leave = self.gate.enter()
        report = gen.Report()
        cut = StopCut(gen.stream(self.state, job, report), stops)
        reply = Reply(self.state, request.scope, job, body, report, cut, chat, self.limiter)
        if body.stream:

            def close() -> None:
                cut.close()
                leave()

            return EventStream(reply.events(), close)
        try:
            text = await self.in_thread(lambda: "".join(cut))
        finally:
            cut.close()
            leave()
        return JSONResponse(reply.whole(text))


class Reply:
    """One answer in OpenAI's shapes: a chat.completion / text_completion, or their chunks."""

    def __init__(
        self,
        state: AppState,
        scope: Scope,
        job: gen.Job,
        body: Sampling,
        report: gen.Report,
        cut: StopCut,
        chat: bool,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self.state, self.scope, self.job, self.body, self.report = state, scope, job, body, report
        self.cut, self.chat, self.limiter = cut, chat, limiter
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def finish_reason(self) -> str:
        return "stop" if self.cut.stopped else self.report.finish_reason

    def usage(self, text: str) -> dict[str, int]:
        """Token counts; after a stop string the reply's tokens are counted again (the model ran one further)."""
        done = self.report.completion_tokens
        if self.cut.stopped or not done:
            done = len(self.state.loaded.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        prompt = self.report.prompt_tokens or len(self.job.ids)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def head(self) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.job.target}

    def whole(self, text: str) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": self.finish_reason()}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        return self.head() | {"choices": [choice], "usage": self.usage(text), "system_fingerprint": None}

    def chunk(self, text: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            head = self.head() | {"object": CHAT_CHUNK, "system_fingerprint": None}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            head = self.head()
        usage = {"usage": None} if self.include_usage else {}
        return head | {"choices": [choice]} | usage

    @property
    def include_usage(self) -> bool:
        return bool(self.body.stream_options and self.body.stream_options.include_usage)

    async def events(self) -> AsyncIterator[str]:
        """The chunks as the model writes them, then the finish reason (and usage, if asked), then [DONE].

        A generation that fails mid-stream ends it with an ``error`` event, which OpenAI clients raise."""
        text = ""
        try:
            if self.chat:
                yield sse(self.chunk(None, role=True))  # at once: the client knows it is queued, not lost
            async for piece in in_thread(iter(self.cut), self.limiter):
                text += piece
                yield sse(self.chunk(piece))
            yield sse(self.chunk(None, self.finish_reason()))
            if self.include_usage:
                kind = {"object": CHAT_CHUNK} if self.chat else {}
                yield sse(self.head() | kind | {"choices": [], "usage": self.usage(text)})
        except Exception as exc:  # the response has started: the error goes into the stream, and one log line
            log.warning(failure_line(self.scope, exc))
            log.debug("traceback of the failed request", exc_info=exc)
            first = (str(exc).strip().splitlines() or [""])[0]
            yield sse(ApiError(500, f"generation failed: {type(exc).__name__}: {first}", "server_error").body())
            return
        yield "data: [DONE]\n\n"


def router(state: AppState, login: tuple[str, str] | None = None) -> APIRouter:
    """The ``/v1`` routes over ``state``, behind ``login`` (None: open, as the app is on loopback)."""
    api = OpenAIApi(state, login)
    routes = APIRouter(prefix="/v1")
    routes.add_api_route("/models", api.models, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/models/{model:path}", api.model, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/chat/completions", api.chat, methods=["POST"], include_in_schema=False)
    routes.add_api_route("/completions", api.completions, methods=["POST"], include_in_schema=False)
    any_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes.add_api_route("/{rest:path}", api.unknown, methods=any_method, include_in_schema=False)
    return routes


def api_app(state: AppState, login: tuple[str, str] | None = None) -> FastAPI:
    """The API alone (``serve --api-only``): no UI, no docs pages, the same one-line log of refusals."""
    return FastAPI(
        routes=list(router(state, login).routes),
        middleware=[Middleware(RequestLog)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )


class ApiServer:
    """A running ``--api-only`` server in a background thread (tests, embedding); ``close`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def serve(
    state: AppState, host: str = "127.0.0.1", port: int = 7860, login: tuple[str, str] | None = None, block: bool = True
) -> ApiServer | None:
    """Serve only the API with uvicorn. With ``block``, until Ctrl+C or SIGTERM (both stop it cleanly, so exit
    handlers still run); else in a thread, returned once it accepts connections."""
    import uvicorn

    from superlora.app.offline import sigterm_interrupts

    config = uvicorn.Config(
        api_app(state, login), host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    if block:
        with sigterm_interrupts():
            try:
                server.run()
            except KeyboardInterrupt:  # uvicorn re-raises the signal it stopped on, once it has stopped
                pass
            except SystemExit:  # uvicorn's answer to a port it cannot bind (it logged why)
                raise SuperloraError(f"could not serve on {host}:{port}") from None
        return None
    thread = threading.Thread(target=server.run, name="superlora-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise SuperloraError(f"could not serve on {host}:{port}")
        time.sleep(0.05)
    return ApiServer(server, thread, f"http://{host}:{port}")
