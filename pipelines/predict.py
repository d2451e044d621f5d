"""python -m pipelines.predict INPUT OUTPUT [--model models/onnx] [--backend onnx|torch] [--classes person ...]
       [--points X,Y ...] [--box X0,Y0,X1,Y1] [--mask FILE] [--expand PX]

Object removal without a server: a Python API and a batch command line over the same inference path as
the service (components.inference).

    from pipelines.predict import remove
    result = remove("photo.jpg", target="person")          # or Target(points=((120, 80),)), an array, ...
    result.image, result.mask, result.bbox

`INPUT` is an image file or a folder of them; for each image `OUTPUT/<name>.png` (the result, with the
input's transparency if it had any) and `OUTPUT/<name>.mask.png` (what was filled, white) are written,
and `OUTPUT/summary.jsonl` gets one line per image. An image that cannot be read or processed is named
on stderr and skipped; the exit status is 1 when any was.

What to remove (the same choices as the API's `Target`): by default every instance of the model's default
classes; `--classes` names others; `--points` takes the instance under each click (x, y in the image's
pixels), `--box` the instances mostly inside it (both restricted to `--classes` when given); `--mask FILE`
fills exactly the white (> 127) pixels of an image of the input's size (a `<name>.mask.png` written here
works), alone. Points, a box and a mask apply to every input image, so a folder must hold images of one size.

Models: the ONNX export (`models/onnx`, stage `export`) on ONNX Runtime, or `--backend torch` with a
joint checkpoint (`models/joint/best.ckpt` or its folder) on PyTorch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from components.backends import load_onnx_remover
from components.images import DEFAULT_MAX_PIXELS, DecodedImage, ImageError, encode_png, mask_png, read_image_file
from components.inference import (
    InferenceConfig,
    ObjectRemover,
    RemovalResult,
    Target,
    TargetError,
    check_inputs,
)
from pipelines.checkpoints import remover_from

log = logging.getLogger("predict")
BackendName = Literal["onnx", "torch"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def load_remover(model: str | Path = "models/onnx", backend: BackendName = "onnx",
                 config: InferenceConfig | None = None) -> ObjectRemover:
    """An ObjectRemover on ONNX Runtime (`model`: the export folder) or PyTorch (`model`: a finetune_joint
    checkpoint or its folder). Missing files are named."""
    path = Path(model)
    if backend == "onnx":
        return load_onnx_remover(path, config)
    if backend == "torch":
        return remover_from(path / "best.ckpt" if path.is_dir() else path, config=config)
    raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")


@lru_cache(maxsize=4)
def _cached(model: str, backend: BackendName) -> ObjectRemover:
    return load_remover(model, backend)


def as_target(target: Target | str | list[str] | tuple[str, ...] | None) -> Target:
    if target is None:
        return Target()
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        return Target(classes=(target,))
    return Target(classes=tuple(target))


def remove(image: np.ndarray | str | Path, target: Target | str | list[str] | None = None, *,
           expand_px: int = 0, model: str | Path = "models/onnx", backend: BackendName = "onnx",
           max_pixels: int = DEFAULT_MAX_PIXELS) -> RemovalResult:
    """Remove `target` (a Target, a class name or names; default: the model's default classes) from
    `image` (an (H, W, 3) uint8 RGB array or an image file). The model is loaded once per (model, backend)."""
    if isinstance(image, str | Path):
        image = read_image_file(image, max_pixels).rgb
    return _cached(str(model), backend).remove(image, as_target(target), expand_px)


def image_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"input not found: {source}")
    return sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def numbers(text: str, count: int, flag: str) -> tuple[float, ...]:
    """`count` comma-separated numbers ("120,80"), or an error naming the flag and the value."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        form = {2: "X,Y", 4: "X0,Y0,X1,Y1"}[count]
        raise argparse.ArgumentTypeError(f"{flag} takes {form} ({count} numbers), got {text!r}")
    return values


def read_mask(path: Path, max_pixels: int) -> np.ndarray:
    """(H, W) bool from an image file: white (> 127 in gray) = fill."""
    try:
        decoded = read_image_file(path, max_pixels)
    except (ImageError, FileNotFoundError) as err:  # their messages name the file
        raise ValueError(f"--mask: {err}") from None
    return decoded.rgb.mean(axis=2) > 127


def cli_target(args: argparse.Namespace) -> Target:
    """The Target of the command line's selection flags; a mask with other selections is an error."""
    if args.mask is not None and (args.classes or args.points or args.box):
        raise ValueError("--mask fills exactly the mask: it cannot be combined with --classes, --points or --box")
    mask = read_mask(args.mask, args.max_pixels) if args.mask is not None else None
    return Target(classes=tuple(args.classes), points=tuple(args.points or ()), box=args.box, mask=mask)


def process(remover: ObjectRemover, file: Path, output: Path, target: Target, expand_px: int,
            max_pixels: int) -> dict:
    decoded: DecodedImage = read_image_file(file, max_pixels)
    try:
        result = remover.remove(decoded.rgb, target, expand_px)
    except TargetError as err:  # a point, box or mask that does not fit this image
        raise TargetError(f"{err} (the {'--mask file' if target.mask is not None else 'selection'} given)") from None
    (output / f"{file.stem}.png").write_bytes(encode_png(result.image, decoded.alpha))
    (output / f"{file.stem}.mask.png").write_bytes(mask_png(result.mask))
    return {"input": str(file), "output": str(output / f"{file.stem}.png"), "bbox": result.bbox,
            "removed_pixels": int(result.mask.sum()), "width": decoded.rgb.shape[1], "height": decoded.rgb.shape[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.predict", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="an image file or a folder of images")
    parser.add_argument("output", type=Path, help="folder for <name>.png, <name>.mask.png and summary.jsonl")
    parser.add_argument("--model", default="models/onnx", help="ONNX export folder, or a joint checkpoint (torch)")
    parser.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--classes", nargs="+", default=(), help="class names to remove (default: the model's)")
    parser.add_argument("--points", nargs="+", metavar="X,Y", type=lambda t: numbers(t, 2, "--points"),
                        help="remove the instance under each point (image pixels)")
    parser.add_argument("--box", metavar="X0,Y0,X1,Y1", type=lambda t: numbers(t, 4, "--box"),
                        help="remove the instances mostly inside the box")
    parser.add_argument("--mask", type=Path, metavar="FILE",
                        help="fill exactly this mask (white = fill; the input's size), alone")
    parser.add_argument("--expand", type=int, default=0, help="extra dilation (> 0) or erosion (< 0), pixels")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="larger images are refused")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        files = image_files(args.input)
        remover = load_remover(args.model, args.backend)
        target = cli_target(args)
        if target.classes:  # an unknown class fails before any image is read
            check_inputs(np.zeros((1, 1, 3), np.uint8), Target(classes=target.classes), args.expand, remover.info)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    failed = []
    with (args.output / "summary.jsonl").open("w") as summary:
        for file in tqdm(files, desc="removing", unit="image"):
            try:
                summary.write(json.dumps(process(remover, file, args.output, target, args.expand,
                                                 args.max_pixels)) + "\n")
            except (ImageError, TargetError, ValueError, OSError) as err:
                failed.append(file)
                tqdm.write(f"skipped {file}: {err}", file=sys.stderr)
    log.info("%d of %d images done; results in %s", len(files) - len(failed), len(files), args.output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
