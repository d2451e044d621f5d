"""bentoml serve serving.service:ObjectRemoval --host 127.0.0.1 --port 3000 [--arg model=object-removal:<version>]

Object removal over HTTP, on the same inference code as evaluation and the batch CLI
(`components.backends.load_onnx_remover`, ONNX Runtime; no torch, nothing from pipelines/); this module only
parses requests and formats answers.

Design:
- The model is one pinned version, never "latest": the Bento argument `model` (`object-removal:<version>`,
  set by `serving.store build`, which makes every Bento) names it; `/info` reports it, its fingerprint,
  the Bento's tag and the MLflow registry version the Bento was built for.
- `remove` and `segment` are typed `@bentoml.api` endpoints (image files in as `Path`s, the target as a
  pydantic model, `expand` and `output` as constrained fields): `bentoml.SyncHTTPClient` calls them and
  /docs.json (OpenAPI, browsable at /docs) describes them. The page, /info and /docs are a small FastAPI app
  mounted beside them (`@bentoml.asgi_app`); BentoML keeps the model store (`BentoModel`), the worker, health
  checks and the Prometheus /metrics.
- In front of the endpoints, serving/admission.py does what must happen before BentoML parses a body: the
  token, no pickles (415), the body read in full against its byte limit, deadline and minimum rate without
  holding an inference slot, file fields checked, then a bounded wait for a slot (429 + Retry-After).
- Images are checked against the pixel limit before decoding (components.images); every refusal is a 4xx
  with `{"error": "..."}` naming the problem. An unexpected failure is logged and answered 500.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import bentoml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from components.backends import load_onnx_remover
from components.images import ImageError, decode_image, decode_mask, encode_png, mask_png, mask_rle
from components.inference import Target, TargetError
from serving.admission import Admission, Refused, authorize
from serving.settings import MAX_EXPAND, Settings
from serving.store import MODEL_NAME

log = logging.getLogger("bentoml.objremoval")
STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
                                           "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}
BENTOML_DOCS = Path(bentoml.__file__).parents[1] / "_bentoml_impl" / "server" / "main-openapi.html"

app = FastAPI(title="object removal", docs_url=None, redoc_url=None, openapi_url=None)
app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.exception_handler(Refused)
async def _refused(_: Request, err: Refused) -> JSONResponse:
    return _error(err.status, err.message, err.headers)


@app.exception_handler(HTTPException)
async def _http_error(_: Request, err: HTTPException) -> JSONResponse:
    return _error(err.status_code, str(err.detail), err.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    return _error(422, str(err.errors()))


class TargetSpec(BaseModel):
    """What to remove; the form field `target` as JSON: `{"classes": [...], "points": [[x, y], ...], "box": [...]}`.
    Empty: the model's default classes. A `mask` file, when sent, is filled as given (with no points or box)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    classes: list[str] = Field(default_factory=list, max_length=64, description="class names to remove")
    points: list[tuple[float, float]] = Field(default_factory=list, max_length=256,
                                              description="(x, y) image pixels on the objects to remove")
    box: tuple[float, float, float, float] | None = Field(None, description="(x0, y0, x1, y1): the objects inside")

    def to_target(self) -> Target:
        return Target(classes=tuple(self.classes), points=tuple(self.points), box=self.box)


EVERYTHING_DEFAULT = TargetSpec()  # the model's default classes
NO_MASK: list[Path] = []  # a list: BentoML 1.4 takes optional files only as lists (it maps no `Path | None`)


class Segment(BaseModel):
    class_: str = Field(alias="class")
    score: float
    bbox: tuple[int, int, int, int]
    area: int
    mask: dict = Field(description="COCO RLE of the (height, width) mask: {size, counts}")


class Segments(BaseModel):
    width: int
    height: int
    segments: list[Segment]


def quiet_validation_errors(record: logging.LogRecord) -> bool:
    """BentoML logs a traceback for every request whose fields fail validation: a client's mistake, answered
    422 naming the field; it is kept as one line."""
    if record.exc_info and isinstance(record.exc_info[1], ValidationError):
        record.msg, record.args, record.exc_info, record.levelno = (f"{record.getMessage()}: invalid input "
                                                                    "(answered 422)", None, None, logging.INFO)
        record.levelname = "INFO"
    return True


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


# No traffic.max_concurrency: BentoML would admit a request before its body is read; serving/admission.py
# admits it after, to the inference slots (OBJREMOVAL_THREADS) through a bounded, timed queue.
@bentoml.service(traffic={"timeout": 300}, workers=1)
@bentoml.asgi_app(app, path="/")
class ObjectRemoval:
    model = bentoml.models.BentoModel(pinned_model(ARGS))

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.remover = load_onnx_remover(self.model.path)
        logging.getLogger("bentoml._internal.server.http_app").addFilter(quiet_validation_errors)
        log.info("model %s loaded; %s", self.model.tag, self.settings)

    @app.get("/")
    def page(self) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/docs")
    def docs(self) -> FileResponse:
        """BentoML's OpenAPI browser over /docs.json (its scripts are BentoML's, under /static_content)."""
        return FileResponse(BENTOML_DOCS)

    @app.get("/info")
    def info(self, request: Request) -> dict:
        authorize({k.lower(): v for k, v in request.headers.items()}, self.settings.api_token)
        meta = self.model.info.metadata
        return {"classes": self.remover.classes, "default_classes": self.remover.default_classes,
                "image_size": self.remover.image_size,
                "limits": {"max_pixels": self.settings.max_pixels, "max_body_bytes": self.settings.max_body_bytes,
                           "max_expand": self.settings.max_expand},
                "model": {"tag": str(self.model.tag), "fingerprint": self.model.info.labels.get("fingerprint"),
                          **{k: meta[k] for k in ("params_hash", "git_revision", "metrics", "parity") if k in meta}},
                "bento": str(bento.tag) if (bento := getattr(ObjectRemoval, "bento", None)) is not None else None,
                "registry": {"model": ARGS.mlflow_model, "version": ARGS.mlflow_version}}

    @bentoml.api
    def remove(self, image: Annotated[Path, Field(description="the photo (PNG, JPEG, WebP, BMP, TIFF, GIF)")],
               target: Annotated[TargetSpec, Field(description="what to remove")] = EVERYTHING_DEFAULT,
               mask: Annotated[list[Path], Field(max_length=1, description="at most one mask image of the photo's "
                                                 "size, white = remove (instead of points or a box)")] = NO_MASK,
               expand: Annotated[int, Field(ge=-MAX_EXPAND, le=MAX_EXPAND,
                                            description="dilate (> 0) or erode (< 0) the mask, pixels")] = 0,
               output: Annotated[Literal["png", "json"], Field(description="png: the result image; json: result and "
                                                                           "mask as base64 PNGs, bbox")] = "png",
               ) -> Annotated[bytes, bentoml.validators.ContentType("image/png")]:
        """Remove objects from a photo: the result PNG (the input's alpha kept; headers X-Removed-Pixels,
        X-Mask-Bbox), or with output=json `{image, mask, bbox, removed_pixels, width, height}`."""
        return self._answer(lambda: self._remove(image, target.to_target(), mask[0] if mask else None, expand, output))

    def _remove(self, image: Path, target: Target, mask: Path | None, expand: int, output: str) -> Response:
        decoded = decode_image(image.read_bytes(), self.settings.max_pixels)
        height, width = decoded.rgb.shape[:2]
        if mask is not None:
            target = replace(target, mask=decode_mask(mask.read_bytes(), (width, height), self.settings.max_pixels))
        result = self.remover.remove(decoded.rgb, target, expand)
        png, removed = encode_png(result.image, decoded.alpha), int(result.mask.sum())
        bbox = list(result.bbox) if result.bbox is not None else None
        if output == "json":
            return JSONResponse({"image": b64(png), "mask": b64(mask_png(result.mask)), "bbox": bbox,
                                 "removed_pixels": removed, "width": width, "height": height})
        headers = {"X-Removed-Pixels": str(removed), "X-Mask-Bbox": ",".join(map(str, bbox)) if bbox else "none"}
        return Response(png, media_type="image/png", headers=headers)

    @bentoml.api
    def segment(self, image: Annotated[Path, Field(description="the photo")]) -> Segments:
        """The instances the model finds: class, score, bbox, area and a COCO RLE mask each."""
        return self._answer(lambda: self._segment(image))

    def _segment(self, image: Path) -> Response:
        rgb = decode_image(image.read_bytes(), self.settings.max_pixels).rgb
        segments = [{"class": s.label, "score": round(s.score, 4), "bbox": list(s.bbox), "area": int(s.mask.sum()),
                     "mask": mask_rle(s.mask)} for s in self.remover.segment(rgb)]
        return JSONResponse({"width": rgb.shape[1], "height": rgb.shape[0], "segments": segments})

    def _answer(self, work) -> Response:
        """`work()`'s answer; bad images and targets become their 4xx, anything unexpected a logged 500."""
        try:
            return work()
        except ImageError as err:
            return _error(err.status, str(err))
        except TargetError as err:
            return _error(422, str(err))
        except Exception:
            log.exception("inference failed")
            return _error(500, "internal error while processing the image (logged on the server)")


ObjectRemoval.add_asgi_middleware(Admission)
