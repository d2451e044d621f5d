"""bentoml serve serving.service:ObjectRemoval --host 127.0.0.1 --port 3000 [--arg model=object-removal:<version>]

Object removal over HTTP, on the same inference code as evaluation and the batch CLI
(`components.backends.load_onnx_remover`, ONNX Runtime; no torch, nothing from pipelines/); this module only
parses requests and formats answers.

Design:
- The model is one pinned version, never "latest": the Bento argument `model` (`object-removal:<version>`,
  set by `serving.store build`, which makes every Bento) names it; `/info` reports it, its fingerprint,
  the Bento's tag and the MLflow registry version the Bento was built for.
- Every route lives in one FastAPI app mounted with `@bentoml.asgi_app`: the checks need the raw body
  before anything decodes it, and with no `@bentoml.api` method nothing here accepts BentoML's pickle
  content type. BentoML keeps what it is good at: the model store (`BentoModel`), workers, traffic
  control, /livez /healthz /readyz and the Prometheus /metrics, which record the mounted routes too.
- Load: decoding, inference and encoding run in a small thread pool per worker (`OBJREMOVAL_THREADS`),
  so the event loop stays free for health checks; other requests wait in BentoML's bounded queue
  (`traffic.max_concurrency`, 16 bodies of at most OBJREMOVAL_MAX_BODY_BYTES held at once; beyond it
  BentoML answers 429 at once, never a 5xx).
- Bad input: every refusal is a 4xx with `{"error": "..."}` naming the problem; the body size is counted
  while it is read (a missing or false Content-Length changes nothing), images are checked against the
  pixel limit before decoding (components.images). An unexpected failure is logged and answered 500.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Literal

import bentoml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from components.backends import load_onnx_remover
from components.images import ImageError, decode_image, decode_mask, encode_png, mask_png, mask_rle
from components.inference import Target, TargetError
from serving.settings import Settings
from serving.store import MODEL_NAME

log = logging.getLogger("bentoml.objremoval")
STATIC = Path(__file__).parent / "static"
PICKLE_TYPES = {"application/vnd.bentoml+pickle", "application/python-pickle", "application/x-python-pickle"}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
                                           "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

app = FastAPI(title="object removal", docs_url=None, redoc_url=None, openapi_url=None)
app.mount("/static", StaticFiles(directory=STATIC), name="static")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.exception_handler(ApiError)
async def _api_error(_: Request, err: ApiError) -> JSONResponse:
    return _error(err.status, err.message, err.headers)


@app.exception_handler(ImageError)
async def _image_error(_: Request, err: ImageError) -> JSONResponse:
    return _error(err.status, str(err))


@app.exception_handler(TargetError)
async def _target_error(_: Request, err: TargetError) -> JSONResponse:
    return _error(422, str(err))


@app.exception_handler(HTTPException)
async def _http_error(_: Request, err: HTTPException) -> JSONResponse:
    return _error(err.status_code, str(err.detail), err.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    return _error(422, str(err.errors()))


class TargetSpec(BaseModel):
    """The `target` form field: `{"classes": [...], "points": [[x, y], ...], "box": [x0, y0, x1, y1]}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    classes: list[str] = Field(default_factory=list, max_length=64)
    points: list[tuple[float, float]] = Field(default_factory=list, max_length=256)
    box: tuple[float, float, float, float] | None = None


def parse_target(raw: str | None) -> Target:
    if not raw:
        return Target()
    try:
        spec = TargetSpec.model_validate_json(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'target'}: {e['msg']}" for e in err.errors())
        raise ApiError(400, f"malformed target JSON ({problems})") from None
    return Target(classes=tuple(spec.classes), points=tuple(spec.points), box=spec.box)


def parse_expand(raw: str | None, limit: int) -> int:
    if not raw:
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(422, f"expand must be a whole number of pixels, got {raw[:40]!r}") from None
    if abs(value) > limit:
        raise ApiError(422, f"expand must be between -{limit} and {limit} pixels, got {value}")
    return value


def parse_output(raw: str | None) -> Literal["png", "json"]:
    if raw in (None, "", "png", "json"):
        return raw or "png"
    raise ApiError(422, f"output must be 'png' or 'json', got {raw[:40]!r}")


async def read_form(request: Request, max_bytes: int) -> FormData:
    """The multipart form of `request`, refusing pickles, other content types and bodies over `max_bytes`."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in PICKLE_TYPES:
        raise ApiError(415, f"content type {media} is refused: this service never unpickles request bodies")
    if media != "multipart/form-data":
        raise ApiError(415, f"expected a multipart/form-data body, got content type {media or '(none)'!r}")
    too_large = f"request body is larger than the limit of {max_bytes} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, too_large)
    body = bytearray()
    try:
        async for chunk in request.stream():  # counted as it arrives: chunked bodies have no Content-Length
            body += chunk
            if len(body) > max_bytes:
                raise ApiError(413, too_large)
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before the body was complete") from None

    async def replay() -> dict:
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=2, max_fields=8, max_part_size=64 * 1024)
    except (MultiPartException, HTTPException) as err:
        raise ApiError(400, f"malformed multipart body: {getattr(err, 'detail', err)}") from None


async def file_field(form: FormData, name: str, required: bool = False) -> bytes | None:
    values = form.getlist(name)
    if not values:
        if required:
            raise ApiError(400, f"missing form field {name!r} (an image file)")
        return None
    if len(values) > 1 or not isinstance(values[0], UploadFile):
        raise ApiError(400, f"form field {name!r} must be one uploaded file")
    return await values[0].read()


def text_field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise ApiError(400, f"form field {name!r} must be text, not a file")
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class BentoArgs(BaseModel):
    """The Bento's arguments (`bentoml build --arg`, fixed into the Bento; `bentoml serve --arg` from source):
    which model version it serves, and the registry version that version is (written by the flow's build)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = None  # "object-removal:<version>": every Bento that serving.store builds pins one
    mlflow_model: str | None = None
    mlflow_version: str | None = None


def pinned_model(args: BentoArgs) -> str:
    """The model tag to serve: `args.model` with its version, never "latest". Serving from source without
    `--arg model=...` is allowed only when the store holds exactly one version of the model."""
    if args.model is not None:
        tag = bentoml.Tag.from_taglike(args.model)
        if tag.version in (None, "latest"):
            raise ValueError(f"Bento argument model={args.model!r} must name a version ({MODEL_NAME}:<version>)")
        return str(tag)
    try:
        versions = sorted(str(m.tag) for m in bentoml.models.list(MODEL_NAME))
    except bentoml.exceptions.NotFound:
        versions = []
    if len(versions) != 1:
        raise ValueError(f"{len(versions)} versions of {MODEL_NAME} in the store ({', '.join(versions) or 'none'}): "
                         f"say which to serve with --arg model={MODEL_NAME}:<version>")
    return versions[0]


ARGS = bentoml.use_arguments(BentoArgs)  # BentoML sets them before it imports this module


@bentoml.service(traffic={"timeout": 300, "max_concurrency": 16}, workers=1)
@bentoml.asgi_app(app, path="/")
class ObjectRemoval:
    model = bentoml.models.BentoModel(pinned_model(ARGS))

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.remover = load_onnx_remover(self.model.path)
        self.pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="inference")
        log.info("model %s loaded; %s", self.model.tag, self.settings)

    @bentoml.on_shutdown
    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def authorize(self, request: Request) -> None:
        token = self.settings.api_token
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())):
            raise ApiError(401, "missing or wrong bearer token (send Authorization: Bearer <token>)",
                           {"WWW-Authenticate": "Bearer"})

    async def run(self, fn, *args) -> Response:
        """`fn(*args)` in the inference pool; an unexpected exception is logged and becomes a 500."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args))
        except (ApiError, ImageError, TargetError):
            raise
        except Exception:
            log.exception("inference failed")
            raise ApiError(500, "internal error while processing the image (logged on the server)") from None

    @app.get("/")
    def page(self) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/info")
    def info(self, request: Request) -> dict:
        self.authorize(request)
        meta = self.model.info.metadata
        return {"classes": self.remover.classes, "default_classes": self.remover.default_classes,
                "image_size": self.remover.image_size,
                "limits": {"max_pixels": self.settings.max_pixels, "max_body_bytes": self.settings.max_body_bytes,
                           "max_expand": self.settings.max_expand},
                "model": {"tag": str(self.model.tag), "fingerprint": self.model.info.labels.get("fingerprint"),
                          **{k: meta[k] for k in ("params_hash", "git_revision", "metrics", "parity") if k in meta}},
                "bento": str(bento.tag) if (bento := getattr(ObjectRemoval, "bento", None)) is not None else None,
                "registry": {"model": ARGS.mlflow_model, "version": ARGS.mlflow_version}}

    @app.post("/remove")
    async def remove(self, request: Request) -> Response:
        self.authorize(request)
        form = await read_form(request, self.settings.max_body_bytes)
        try:
            image = await file_field(form, "image", required=True)
            mask = await file_field(form, "mask")
            target = parse_target(text_field(form, "target"))
            expand = parse_expand(text_field(form, "expand"), self.settings.max_expand)
            output = parse_output(text_field(form, "output"))
        finally:
            await form.close()
        return await self.run(self._remove, image, mask, target, expand, output)

    def _remove(self, data: bytes, mask: bytes | None, target: Target, expand: int, output: str) -> Response:
        decoded = decode_image(data, self.settings.max_pixels)
        height, width = decoded.rgb.shape[:2]
        if mask is not None:
            target = replace(target, mask=decode_mask(mask, (width, height), self.settings.max_pixels))
        result = self.remover.remove(decoded.rgb, target, expand)
        png, removed = encode_png(result.image, decoded.alpha), int(result.mask.sum())
        bbox = list(result.bbox) if result.bbox is not None else None
        if output == "json":
            return JSONResponse({"image": b64(png), "mask": b64(mask_png(result.mask)), "bbox": bbox,
                                 "removed_pixels": removed, "width": width, "height": height})
        headers = {"X-Removed-Pixels": str(removed), "X-Mask-Bbox": ",".join(map(str, bbox)) if bbox else "none"}
        return Response(png, media_type="image/png", headers=headers)

    @app.post("/segment")
    async def segment(self, request: Request) -> Response:
        self.authorize(request)
        form = await read_form(request, self.settings.max_body_bytes)
        try:
            image = await file_field(form, "image", required=True)
        finally:
            await form.close()
        return await self.run(self._segment, image)

    def _segment(self, data: bytes) -> Response:
        rgb = decode_image(data, self.settings.max_pixels).rgb
        segments = [{"class": s.label, "score": round(s.score, 4), "bbox": list(s.bbox), "area": int(s.mask.sum()),
                     "mask": mask_rle(s.mask)} for s in self.remover.segment(rgb)]
        return JSONResponse({"width": rgb.shape[1], "height": rgb.shape[0], "segments": segments})



# After the class: its routes are included into `app` when it is decorated, and this one must come last.
@app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
def not_found(request: Request, path: str) -> Response:
    """Unknown paths and methods get JSON errors too (BentoML's health and metrics routes match first)."""
    routes = app.router.routes[:-1]
    allowed = [m for m in METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)]
    if allowed:
        raise ApiError(405, f"method {request.method} not allowed on /{path} (allowed: {', '.join(allowed)})",
                       {"Allow": ", ".join(allowed)})
    raise ApiError(404, f"no such endpoint: {request.method} /{path}")
