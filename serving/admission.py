"""The ASGI middleware in front of the BentoML API endpoints (/remove, /segment): what must happen before
BentoML's handler parses anything, and the admission of requests to the inference slots.

For each API request, in this order:
    1. route     any method but POST: 405; no or a wrong bearer token (when one is set): 401
    2. type      pickle content types (BentoML's own and Python's): 415, never unpickled; anything else that
                 is not multipart/form-data: 415
    3. body      read in full *before* a slot is taken, so a slow client holds only its own connection: over
                 the byte limit (Content-Length or counted as it arrives): 413; slower than the minimum rate
                 (after a grace second) or past the deadline: 408
    4. form      parsed once here (at most 2 files, 8 fields): file fields must be files (BentoML would
                 otherwise fetch a text value as a URL), and each at most once: 400
    5. queue     wait for one of `threads` inference slots, at most `queue_timeout` s and with at most
                 `max_queue` requests waiting (each holds its body); then 429 with Retry-After (not a
                 5xx: the service is well, only busy)
    6. handler   BentoML's endpoint gets the body as read, holding the slot until its answer is sent

Every error answer, ours or the framework's (404/405 text, pydantic validation, BentoML's `[{"error": ...}]`),
goes out as `{"error": "<what was wrong>"}`; validation errors become 422 naming the field.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from serving.settings import Settings

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

PICKLE_TYPES = {"application/vnd.bentoml+pickle", "application/python-pickle", "application/x-python-pickle"}
FILE_FIELDS = {"/remove": ("image", "mask"), "/segment": ("image",)}  # the API routes and their file fields
RATE_GRACE_S = 1.0  # the minimum rate is enforced after this much time


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


async def send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def authorize(headers: dict[str, str], token: str | None) -> None:
    if token is None:
        return
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())):
        raise Refused(401, "missing or wrong bearer token (send Authorization: Bearer <token>)",
                      {"WWW-Authenticate": "Bearer"})


def check_type(headers: dict[str, str]) -> None:
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media in PICKLE_TYPES:
        raise Refused(415, f"content type {media} is refused: this service never unpickles request bodies")
    if media != "multipart/form-data":
        raise Refused(415, f"expected a multipart/form-data body, got content type {media or '(none)'!r}")


async def read_body(receive: Receive, headers: dict[str, str], settings: Settings) -> bytes:
    """The whole body, within the byte limit, the deadline and the minimum rate."""
    too_large = f"request body is larger than the limit of {settings.max_body_bytes} bytes"
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise Refused(413, too_large, {"Connection": "close"})
    start, body = time.monotonic(), bytearray()
    deadline = start + settings.body_timeout
    while True:
        # the next chunk must come before the average rate falls under the minimum, and before the deadline
        due = min(deadline, start + RATE_GRACE_S + (len(body) + 1) / settings.min_body_rate)
        try:
            message = await asyncio.wait_for(receive(), max(0.0, due - time.monotonic()))
        except TimeoutError:
            elapsed = time.monotonic() - start
            why = (f"the body was not complete after {settings.body_timeout} s" if time.monotonic() >= deadline else
                   f"the body arrived slower than {settings.min_body_rate} bytes/s ({len(body)} bytes in "
                   f"{elapsed:.1f} s)")
            raise Refused(408, why, {"Connection": "close"}) from None
        if message["type"] == "http.disconnect":
            raise Refused(400, "the client disconnected before the body was complete")
        body += message.get("body", b"")
        if len(body) > settings.max_body_bytes:  # counted as it arrives: chunked bodies have no Content-Length
            raise Refused(413, too_large, {"Connection": "close"})
        if not message.get("more_body", False):
            return bytes(body)


def replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replayed


async def check_form(scope: Scope, body: bytes, file_fields: tuple[str, ...]) -> None:
    form = None
    try:
        form = await Request(scope, replay(body, _never)).form(max_files=2, max_fields=8, max_part_size=64 * 1024)
        for name in file_fields:
            values = form.getlist(name)
            if len(values) > 1 or (values and not isinstance(values[0], UploadFile)):
                raise Refused(400, f"form field {name!r} must be one uploaded file")
    except (MultiPartException, HTTPException) as err:  # Starlette raises the latter when the scope has an app
        raise Refused(400, f"malformed multipart body: {getattr(err, 'detail', None) or err}") from None
    finally:
        if form is not None:
            await form.close()


async def _never() -> dict:
    return {"type": "http.disconnect"}


class Slots:
    """`count` inference slots; a request waits at most `timeout` s, with at most `max_waiting` waiting."""

    def __init__(self, count: int, timeout: float, max_waiting: int):
        self.count, self.timeout, self.max_waiting = count, timeout, max_waiting
        self.semaphore = asyncio.Semaphore(count)
        self.waiting = 0
        self.service_s = 1.0  # moving average of the time a request holds a slot: Retry-After's estimate

    def retry_after(self) -> str:
        return str(max(1, math.ceil(self.service_s * (self.waiting + 1) / self.count)))

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        if self.waiting >= self.max_waiting:
            raise Refused(429, f"the service is busy: {self.waiting} requests are already waiting (the queue's "
                          "limit); try again later", {"Retry-After": self.retry_after()})
        self.waiting += 1
        try:
            await asyncio.wait_for(self.semaphore.acquire(), self.timeout)
        except TimeoutError:
            raise Refused(429, f"the service is busy: no inference slot came free within {self.timeout} s; "
                          "try again later", {"Retry-After": self.retry_after()}) from None
        finally:
            self.waiting -= 1
        start = time.monotonic()
        try:
            await work()
        finally:
            self.semaphore.release()
            self.service_s = 0.8 * self.service_s + 0.2 * (time.monotonic() - start)


class Admission:
    """The middleware (BentoML's `add_asgi_middleware`); settings are read when the server builds it."""

    def __init__(self, app) -> None:
        self.app = app
        self.settings = Settings.from_env()
        self.slots: Slots | None = None  # made on first use, inside the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = json_errors(scope, send)
        fields = FILE_FIELDS.get(scope["path"])
        if fields is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if scope["method"] != "POST":
                raise Refused(405, f"method {scope['method']} not allowed on {scope['path']} (allowed: POST)",
                              {"Allow": "POST"})
            authorize(headers, self.settings.api_token)
            check_type(headers)
            body = await read_body(receive, headers, self.settings)
            await check_form(scope, body, fields)
            if self.slots is None:
                self.slots = Slots(self.settings.threads, self.settings.queue_timeout, self.settings.max_queue)
            await self.slots.run(lambda: self.app(scope, replay(body, receive), send))
        except Refused as err:
            await send_error(send, err.status, err.message, err.headers)


def json_errors(scope: Scope, send: Send) -> Send:
    """`send` that turns every error answer not already `{"error": "..."}` into one."""
    held: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        status, message_text = normalized(scope, held["status"], b"".join(chunks), dict(held["headers"]))
        if message_text is None:  # already ours
            await send(held)
            await send({"type": "http.response.body", "body": b"".join(chunks)})
            return
        kept = {k.decode(): v.decode() for k, v in held["headers"] if k.lower() in (b"allow", b"retry-after",
                                                                                      b"www-authenticate")}
        await send_error(send, status, message_text, kept)

    return wrapped


def normalized(scope: Scope, status: int, body: bytes, headers: dict[bytes, bytes]) -> tuple[int, str | None]:
    """(status, message) for an error answer, or (status, None) when it already is `{"error": "<text>"}`."""
    try:
        data = json.loads(body) if b"json" in headers.get(b"content-type", b"") else None
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1:  # BentoML 1.4 wraps its 4xx error in a list
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("detail"), list):  # pydantic validation of the inputs
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'input'}: {e.get('msg')}"
                             for e in data["detail"])
        return 422, f"invalid request ({problems})"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return (status, None) if set(data) == {"error"} else (status, data["error"])
    if status == 404:
        return 404, f"no such endpoint: {scope['method']} {scope['path']}"
    if status == 405:
        return 405, f"method {scope['method']} not allowed on {scope['path']}"
    text = body.decode("utf-8", "replace").strip()[:200]
    return status, text or f"HTTP {status}"
