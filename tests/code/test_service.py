"""The BentoML service over real HTTP: `bentoml serve serving.service:ObjectRemoval` in a subprocess on
127.0.0.1 with a temporary model store (BENTOML_HOME) holding the ONNX export, then every endpoint,
every refused input (status and the JSON error naming the problem), load, and the bearer token.

The model is `models/onnx` when the pipeline has run, else the tiny model conftest trains and exports;
the one test that needs a model that really finds persons skips without the real one.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import bentoml
import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from components.scenes import SceneConfig, generate_scene
from serving.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REAL_MODEL = REPO / "models" / "onnx"
FILES = ("segmenter.onnx", "inpainter.onnx", "model.json")
TOKEN = "s3cret-token"
MAX_PIXELS, MAX_BODY = 4_000_000, 4 * 2**20  # small limits keep the refusal tests fast
PERSON = 1


def onnx_dir(request: pytest.FixtureRequest) -> Path:
    """models/onnx if the pipeline has run, else the tiny export of conftest's `exported` (trains once)."""
    if all((REAL_MODEL / f).is_file() for f in FILES):
        return REAL_MODEL
    return Path(request.getfixturevalue("exported")[0]["paths"]["onnx"])


def without_torch(tmp: Path) -> str:
    """A folder whose `torch` package refuses to import, for PYTHONPATH: the service must run without PyTorch."""
    shim = tmp / "no-torch" / "torch"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text('raise ImportError("torch is not installed where the service runs")\n')
    return str(shim.parent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(model_dir: Path | None, tmp: Path, service: str = "serving.service:ObjectRemoval", cwd: Path = REPO,
          home: Path | None = None, **env: str) -> Iterator[str]:
    """A real `bentoml serve` of `service` (an import path, or a Bento tag in the store) on 127.0.0.1, with
    `model_dir` imported into a fresh model store (`home`, default tmp/bentoml) unless None; yields its URL."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OBJREMOVAL_", "BENTOML_"))}
    env = {**clean, "BENTOML_HOME": str(home or tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
           "NO_ALBUMENTATIONS_UPDATE": "1", **env}
    if model_dir is not None:
        subprocess.run([sys.executable, "-m", "serving.store", str(model_dir)], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=120)
    port, log = free_port(), tmp / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", service,
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"bentoml serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bentoml serve not ready after 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the session this test started for the server
            process.wait()


def scene_image(width: int = 641, height: int = 479, seed: int = 3) -> tuple[np.ndarray, tuple[float, float]]:
    """A synthetic scene with a person, resized to width x height, and a point on the largest person."""
    config = SceneConfig(size=128, min_things=1, max_things=2, person_prob=1.0, occlusion_prob=0.0, crowd_prob=0.0)
    scene = generate_scene(np.random.default_rng(seed), config)
    person = max((i.mask for i in scene.instances if i.category_id == PERSON), key=np.sum)
    ys, xs = np.nonzero(person)
    centre = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)  # the person's pixel nearest its centroid
    image = cv2.resize(scene.image, (width, height), interpolation=cv2.INTER_CUBIC)
    return image, ((xs[centre] + 0.5) * width / 128, (ys[centre] + 0.5) * height / 128)


def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def png_bomb(side: int = 30_000) -> bytes:
    """A 1-bit PNG of side x side pixels (900 megapixels for 30 000) in about 100 kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\0" * (1 + side // 8 + 1)
    compressor, parts = zlib.compressobj(9), []
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def raw_http(url: str, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Send bytes as they are (a false or huge Content-Length); the status and JSON body of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 62


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="module")
def server(request, server_dir) -> Iterator[str]:
    with serve(onnx_dir(request), server_dir, OBJREMOVAL_API_TOKEN=TOKEN, OBJREMOVAL_MAX_PIXELS=str(MAX_PIXELS),
               OBJREMOVAL_MAX_BODY_BYTES=str(MAX_BODY), PYTHONPATH=without_torch(server_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def photo() -> tuple[np.ndarray, tuple[float, float]]:
    return scene_image()


def post_remove(client: httpx.Client, image: bytes, **fields) -> httpx.Response:
    mask = fields.pop("mask", None)
    files = {"image": ("photo.png", image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return client.post("/remove", files=files, data={k: str(v) for k, v in fields.items()})


def test_settings_come_from_the_environment_and_bad_values_are_named():
    settings = Settings.from_env({"OBJREMOVAL_MAX_PIXELS": "1_000", "OBJREMOVAL_API_TOKEN": "zz-secret"})
    assert (settings.max_pixels, settings.max_body_bytes, settings.api_token) == (1000, 32 * 2**20, "zz-secret")
    assert "zz-secret" not in repr(settings)
    assert Settings.from_env({"OBJREMOVAL_API_TOKEN": ""}).api_token is None
    with pytest.raises(ValueError, match="OBJREMOVAL_MAX_BODY_BYTES must be a positive integer, got '-5'"):
        Settings.from_env({"OBJREMOVAL_MAX_BODY_BYTES": "-5"})


def test_the_service_imports_neither_torch_nor_pipelines(server, server_dir):
    """The server above runs with torch unimportable; here the service module's imports are listed."""
    code = ("import sys, serving.service; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pipelines', 'lightning', 'mlflow'}))")
    env = {**os.environ, "BENTOML_HOME": str(server_dir / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_health_and_readiness_need_no_token(server):
    for path in ("/livez", "/healthz", "/readyz"):
        assert httpx.get(server + path).status_code == 200, path


def test_info_describes_the_model_and_limits(client):
    info = client.get("/info").json()
    assert "person" in info["classes"] and info["default_classes"] == ["person"]
    assert info["limits"] == {"max_pixels": MAX_PIXELS, "max_body_bytes": MAX_BODY, "max_expand": 64}
    assert info["model"]["tag"].startswith("object-removal:") and info["model"]["params_hash"]
    assert isinstance(info["image_size"], int) and info["image_size"] > 0


def test_the_page_is_served_with_its_script_and_style(server):
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Object removal" in page.text and "Content-Security-Policy" in page.headers
    assert "fetch(\"/remove\"" in httpx.get(server + "/static/app.js").text
    assert httpx.get(server + "/static/style.css").status_code == 200


def test_remove_with_a_mask_returns_json_and_keeps_every_other_pixel(client, photo):
    image, _ = photo
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[100:180, 200:260] = 255
    response = post_remove(client, encode(image), mask=encode(mask), output="json")
    assert response.status_code == 200, response.text
    body = response.json()
    result, filled = decode(base64.b64decode(body["image"])), decode(base64.b64decode(body["mask"])) > 0
    assert (body["width"], body["height"]) == (641, 479) and result.shape == image.shape
    assert filled.shape == image.shape[:2] and np.array_equal(filled, mask > 0)  # a user mask is filled as given
    assert body["removed_pixels"] == int(filled.sum()) and body["bbox"] == [200, 100, 260, 180]
    assert np.array_equal(result[~filled], image[~filled])
    assert not np.array_equal(result[filled], image[filled])


def test_remove_png_with_expand_reports_the_mask_in_headers(client, photo):
    image, _ = photo
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[200:240, 300:330] = 255
    response = post_remove(client, encode(image), mask=encode(mask), expand=5)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    x0, y0, x1, y1 = map(int, response.headers["X-Mask-Bbox"].split(","))
    assert (x0, y0, x1, y1) == (295, 195, 335, 245)  # dilated by 5 px on every side
    assert 40 * 30 < int(response.headers["X-Removed-Pixels"]) <= 40 * 50
    result = decode(response.content)
    outside = np.ones(image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert result.shape == image.shape and np.array_equal(result[outside], image[outside])


def test_a_click_on_a_person_removes_it(client, photo):
    if not (REAL_MODEL / "model.json").is_file():
        pytest.skip("needs the trained model in models/onnx (`dvc repro export`); the tiny test model finds nothing")
    image, point = photo
    response = post_remove(client, encode(image), target=json.dumps({"points": [point]}), output="json")
    body = response.json()
    filled = decode(base64.b64decode(body["mask"])) > 0
    assert body["removed_pixels"] > 500 and filled[int(point[1]), int(point[0])]
    result = decode(base64.b64decode(body["image"]))
    assert np.array_equal(result[~filled], image[~filled])


def test_segment_returns_rle_masks_of_the_image_size(client, photo):
    image, point = photo
    response = client.post("/segment", files={"image": ("photo.jpg", encode(image, "JPEG", quality=95))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (641, 479)
    for segment in body["segments"]:
        mask = mask_utils.decode({"size": segment["mask"]["size"], "counts": segment["mask"]["counts"].encode()})
        assert mask.shape == (479, 641) and int(mask.sum()) == segment["area"] > 0
        x0, y0, x1, y1 = segment["bbox"]
        assert mask[y0:y1, x0:x1].sum() == segment["area"] and 0 <= segment["score"] <= 1
    if (REAL_MODEL / "model.json").is_file():
        assert any(s["class"] == "person" for s in body["segments"])


def _rgba(image):
    alpha = np.tile(np.linspace(0, 255, image.shape[1]).astype(np.uint8), (image.shape[0], 1))
    return np.dstack([image, alpha])


ODD_IMAGES = {  # name -> (encoded image, expected (height, width) of the result)
    "rgba": lambda im: (encode(_rgba(im)), im.shape[:2]),
    "grayscale": lambda im: (encode(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)), im.shape[:2]),
    "16-bit": lambda im: (cv2.imencode(".png", im[..., ::-1].astype(np.uint16) * 257)[1].tobytes(), im.shape[:2]),
    "palette": lambda im: (_save(Image.fromarray(im).quantize(64), "PNG"), im.shape[:2]),
    "cmyk": lambda im: (_save(Image.fromarray(im).convert("CMYK"), "JPEG"), im.shape[:2]),
    "exif-rotated": lambda im: (_save(Image.fromarray(im), "JPEG", exif=_exif(6)), im.shape[1::-1]),
    "webp": lambda im: (encode(im, "WEBP", lossless=True), im.shape[:2]),
}


def _save(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("kind", ODD_IMAGES)
def test_unusual_but_valid_images_are_handled(client, photo, kind):
    data, shape = ODD_IMAGES[kind](photo[0])
    response = post_remove(client, data)
    assert response.status_code == 200, response.text
    result = Image.open(io.BytesIO(response.content))
    assert (result.height, result.width) == shape
    if kind == "rgba":  # transparency survives
        assert result.mode == "RGBA" and np.array_equal(np.asarray(result)[..., 3], _rgba(photo[0])[..., 3])


@pytest.fixture(scope="module")
def bad_requests(photo) -> dict:
    image = photo[0]
    png = encode(image)
    small_mask = encode(np.zeros((10, 10), np.uint8))
    big = encode(np.zeros((2000, 2001, 3), np.uint8))  # 4.002 megapixels > MAX_PIXELS
    files = lambda data, name="photo.png": {"image": (name, data, "application/octet-stream")}  # noqa: E731
    return {  # name -> (files, form fields, status, words the error must contain)
        "not an image": (files(b"just some text, not pixels", "notes.txt"), {}, {400}, "not a recognised image"),
        "truncated": (files(png[: len(png) // 2]), {}, {400}, "truncated"),
        "zero bytes": (files(b""), {}, {400}, "empty"),
        "unsupported format": (files(b"P6\n2 2\n255\n" + bytes(12), "tiny.ppm"), {}, {415}, "not supported"),
        "decompression bomb": (files(png_bomb()), {}, {413}, "pixel"),
        "over the pixel limit": (files(big), {}, {413}, "pixel"),
        "point outside": (files(png), {"target": json.dumps({"points": [[5000, 10]]})}, {422}, "outside"),
        "unknown class": (files(png), {"target": json.dumps({"classes": ["unicorn"]})}, {422}, "person"),
        "bad box": (files(png), {"target": json.dumps({"box": [50, 50, 10, 10]})}, {422}, "box"),
        "mask of the wrong size": (files(png) | {"mask": ("m.png", small_mask, "image/png")}, {}, {400, 422}, "mask"),
        "mask with points": (files(png) | {"mask": ("m.png", encode(np.zeros(image.shape[:2], np.uint8)))},
                             {"target": json.dumps({"points": [[1, 1]]})}, {422}, "mask"),
        "target not JSON": (files(png), {"target": "{classes: person"}, {422}, "target"),
        "target wrong shape": (files(png), {"target": json.dumps({"classes": "person", "colour": 1})}, {422}, "target"),
        "expand not a number": (files(png), {"expand": "lots"}, {422}, "expand"),
        "expand too large": (files(png), {"expand": "1000"}, {422}, "expand"),
        "unknown output": (files(png), {"output": "gif"}, {422}, "output"),
        "missing image": ({"mask": ("m.png", small_mask)}, {"target": "{}"}, {422}, "image"),
        "two masks": ([("mask", ("m.png", small_mask)), ("mask", ("n.png", small_mask))], {}, {400}, "mask"),
        "image as text": ({"mask": ("m.png", small_mask)}, {"image": "hello"}, {400}, "image"),
        "too many parts": (files(png) | {"mask": ("m.png", small_mask), "extra": ("e.png", small_mask)}, {}, {400},
                           "too many files"),
    }


BAD = ["not an image", "truncated", "zero bytes", "unsupported format", "decompression bomb", "over the pixel limit",
       "point outside", "unknown class", "bad box", "mask of the wrong size", "mask with points", "target not JSON",
       "target wrong shape", "expand not a number", "expand too large", "unknown output", "missing image",
       "image as text", "too many parts", "two masks"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_with_a_json_error(client, bad_requests, case):
    files, data, statuses, words = bad_requests[case]
    response = client.post("/remove", files=files, data=data)
    assert response.status_code in statuses, response.text
    assert words in response.json()["error"].lower(), response.json()


@pytest.mark.parametrize("content_type", ["application/vnd.bentoml+pickle", "application/python-pickle",
                                          "application/json"])
def test_pickles_and_other_content_types_are_refused(client, content_type):
    for path in ("/remove", "/segment"):
        response = client.post(path, content=b"\x80\x04K\x01.", headers={"Content-Type": content_type})
        assert response.status_code == 415 and content_type in response.json()["error"]


def test_a_multipart_body_without_boundary_is_malformed(client):
    response = client.post("/remove", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 400 and "multipart" in response.json()["error"]


def test_a_declared_oversized_body_is_refused_before_it_is_read(server):
    head = (f"POST /remove HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {10**12}\r\n")
    status, body = raw_http(server, head)
    assert status == 413 and "larger than the limit" in body["error"]


def test_a_chunked_oversized_body_is_refused_while_it_is_read(client):
    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(MAX_BODY // 2**16 + 2):
            yield b"\0" * 2**16

    response = client.post("/remove", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert "content-length" not in response.request.headers  # sent chunked
    assert response.status_code == 413 and "larger than the limit" in response.json()["error"]


def test_a_content_length_shorter_than_the_body_cuts_it_there(server, photo):
    boundary, png = "x", encode(photo[0])
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n".encode()
            + png + f"\r\n--{boundary}--\r\n".encode())
    head = (f"POST /remove HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body) // 2}\r\n")
    try:
        status, answer = raw_http(server, head, body)
    except json.JSONDecodeError:  # uvicorn answered the bytes past Content-Length, a malformed 2nd request, first
        status, answer = 400, {"error": "invalid http request (the image part)"}
    assert status in (400, 422) and "image" in answer["error"].lower()  # the cut-off part never completes
    assert httpx.get(server + "/readyz").status_code == 200


def test_wrong_routes_and_methods_get_json_errors(client):
    for method, path, status in [("GET", "/remove", 405), ("PUT", "/info", 405), ("GET", "/nowhere", 404),
                                 ("DELETE", "/segment", 405), ("GET", "/static/missing.js", 404)]:
        response = client.request(method, path)
        assert response.status_code == status, (method, path, response.text)
        assert response.json()["error"]


def test_the_token_is_required_and_compared(server, photo):
    png = encode(photo[0])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        assert httpx.get(server + "/info", headers=headers).status_code == 401
        response = httpx.post(server + "/remove", files={"image": ("a.png", png)}, headers=headers)
        assert response.status_code == 401 and "token" in response.json()["error"]
        assert httpx.post(server + "/segment", files={"image": ("a.png", png)}, headers=headers).status_code == 401
    assert httpx.get(server + "/").status_code == 200


def test_a_burst_waits_for_the_slot_instead_of_failing(client, photo):
    png = encode(photo[0])
    with ThreadPoolExecutor(40) as pool:  # 40 at once, one inference slot: all wait their turn in the queue
        responses = list(pool.map(lambda _: post_remove(client, png), range(40)))
    assert [r.status_code for r in responses] == [200] * 40


def slow_upload(url: str, total: int, rate: float, seconds: float) -> tuple[int | None, float]:
    """POST /remove declaring `total` body bytes and sending `rate` bytes/s for `seconds` (or until refused);
    the status of the answer (None: none before the end) and the seconds the connection was held."""
    parts = urlsplit(url)
    start = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=seconds + 30) as sock:
        sock.sendall((f"POST /remove HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                      f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {total}\r\n\r\n").encode())
        sock.settimeout(0.05)
        sent, data = 0, b""
        while time.monotonic() - start < seconds and sent < total:
            chunk = b"\0" * max(1, int(rate * 0.25))
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
            try:
                data += sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                break
            if data:
                break
            time.sleep(0.25)
        if not data:
            sock.settimeout(5)
            try:
                data = sock.recv(65536)
            except OSError:
                pass
    return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None), time.monotonic() - start


def test_twenty_slow_uploaders_do_not_starve_a_normal_client(server, client, photo):
    """20 clients trickle bodies just above the minimum rate (16 KiB/s) for 12 s: they hold connections, not
    the inference slot; a normal request meanwhile is answered 200 in a few seconds. A stalled upload is cut."""
    png = encode(photo[0])
    with ThreadPoolExecutor(21) as pool:
        slow = [pool.submit(slow_upload, server, 2**20, 40 * 1024, 12) for _ in range(20)]
        stalled = pool.submit(slow_upload, server, 2**20, 1, 12)  # 4 bytes per second: far under the rate
        time.sleep(2)  # every slow body is being read now
        start = time.monotonic()
        response = post_remove(client, png)
        took = time.monotonic() - start
        assert not any(f.done() for f in slow), [f.result() for f in slow if f.done()]
        results, cut = [f.result() for f in slow], stalled.result()
    assert response.status_code == 200 and took < 10, (response.status_code, took)
    assert cut[0] == 408 and cut[1] < 6, cut  # refused once its rate fell under the minimum (after ~1 s)
    assert all(status in (None, 408) for status, _ in results) and all(held > 11 for _, held in results), results


def test_the_python_client_calls_the_typed_endpoints(server, photo, tmp_path):
    image, _ = photo
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[100:180, 200:260] = 255
    (tmp_path / "photo.png").write_bytes(encode(image))
    (tmp_path / "mask.png").write_bytes(encode(mask))
    with bentoml.SyncHTTPClient(server, token=TOKEN) as remote:
        result = decode(remote.remove(image=tmp_path / "photo.png", mask=[tmp_path / "mask.png"], expand=0))
        found = remote.segment(image=tmp_path / "photo.png")
        with pytest.raises(bentoml.exceptions.BentoMLException, match="expand"):
            remote.remove(image=tmp_path / "photo.png", expand=500)
    outside = mask == 0
    assert result.shape == image.shape and np.array_equal(result[outside], image[outside])
    assert not np.array_equal(result[~outside], image[~outside])
    assert (found["width"], found["height"]) == (641, 479) and isinstance(found["segments"], list)
    with bentoml.SyncHTTPClient(server, token="wrong") as remote:
        with pytest.raises(bentoml.exceptions.BentoMLException):
            remote.segment(image=tmp_path / "photo.png")


def test_openapi_describes_the_endpoints(server):
    spec = httpx.get(server + "/docs.json").json()
    for route, fields in (("/remove", {"image", "target", "mask", "expand", "output"}), ("/segment", {"image"})):
        body = spec["paths"][route]["post"]["requestBody"]["content"]
        schema = body["multipart/form-data"]["schema"]
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        assert set(schema["properties"]) == fields, schema
    docs = httpx.get(server + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert httpx.get(server + "/static_content/swagger-ui-bundle.js").status_code == 200


def test_a_full_queue_is_refused_with_429_and_retry_after(request, tmp_path, photo):
    """A server whose queue holds 2 requests for at most 1 s: of 12 at once, some are answered
    429 with Retry-After (after waiting the full second, or at once when 2 already wait), never a 5xx."""
    png = encode(photo[0])
    with serve(onnx_dir(request), tmp_path, OBJREMOVAL_QUEUE_TIMEOUT="1", OBJREMOVAL_MAX_QUEUE="2",
               PYTHONPATH=without_torch(tmp_path)) as url:
        with httpx.Client(base_url=url, timeout=60) as plain, ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(lambda _: post_remove(plain, png), range(12)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert int(refused.headers["Retry-After"]) >= 1 and "busy" in refused.json()["error"]


def test_metrics_count_requests_by_endpoint(client):
    text = httpx.get(str(client.base_url) + "/metrics").text
    lines = [line for line in text.splitlines() if "request_total" in line and 'endpoint="/remove"' in line]
    assert any('http_response_code="200"' in line for line in lines), text[:2000]
    assert any('http_response_code="413"' in line for line in lines)


def test_after_all_that_the_server_still_removes_and_logged_no_error(client, photo, server_dir):
    response = post_remove(client, encode(photo[0]), output="json")
    assert response.status_code == 200 and response.json()["width"] == 641
    log = (server_dir / "server.log").read_text()
    assert "Traceback" not in log and "inference failed" not in log  # no bad input reached the 500 path
    assert "s3cret" not in log  # the token is never logged
