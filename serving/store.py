"""python -m serving.store [ONNX_DIR] [--version V]          the export into the BentoML store; prints its tag
python -m serving.store build ONNX_DIR BENTOFILE --version V [--labels JSON] [--args JSON] [--export FILE]

The export (segmenter.onnx, inpainter.onnx, model.json) as one folder model `object-removal` in the BentoML
model store (`$BENTOML_HOME/models`), and the Bento that serves exactly that version.

- **Pinned, never "latest".** The model's version is chosen by the caller (the registry's fingerprint of the
  export), and `build` passes the full tag to the service as the Bento argument `model`
  (`bentoml.use_arguments`), so the Bento loads that version whatever else the store holds.
- **Nothing half-imported.** BentoML copies a model or Bento into its store file by file, so a kill
  mid-copy leaves a folder that breaks `bentoml models list`. Here everything is made in a staging store
  (`$BENTOML_HOME/.staging/<pid>-<random>`, a store of its own, in a subprocess) and then moved into the
  store with one `rename` per version (atomic on one file system): a kill leaves the whole version or none.
  `clean` (run at the start of every import) deletes staging folders whose process is gone and any
  `object-removal` version folder without its manifest or files. On Linux the subprocess that fills a
  staging store is killed with its parent (`PR_SET_PDEATHSIG`), so a killed import leaves no orphan still
  writing into a folder that the next import deletes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.export_contract import FILES, GRAPH_FILES, METADATA_FIELDS, MODEL_JSON, missing_files

MODEL_NAME = "object-removal"
STAGING = ".staging"
KINDS = (("models", "model.yaml"), ("bentos", "bento.yaml"))  # models first: a Bento never precedes its model


def fingerprint(onnx_dir: str | Path) -> str:
    """SHA-256 of the two graphs and the training's params hash (model.json): what makes a model itself. The
    registry finds versions by it and the store names the model's version after it."""
    folder = Path(onnx_dir)
    digest = hashlib.sha256()
    for name in GRAPH_FILES:
        digest.update((folder / name).read_bytes())
    digest.update(str(json.loads((folder / MODEL_JSON).read_text()).get("params_hash")).encode())
    return digest.hexdigest()[:32]


def home() -> Path:
    """The BentoML home ($BENTOML_HOME, default ~/bentoml), read now: BentoML itself fixes it at first use in a
    process, so the functions here that take a store work on its folders or in a subprocess."""
    return Path(os.path.expanduser(os.path.expandvars(os.environ.get("BENTOML_HOME", "~/bentoml"))))


def bentos(store: Path, name: str = MODEL_NAME) -> list[dict]:
    """The Bentos `name:*` in `store`, oldest first, as their manifests (bento.yaml) say: tag, labels, models."""
    import yaml

    found = []
    for manifest in (store / "bentos" / name).glob("*/bento.yaml"):
        info = yaml.safe_load(manifest.read_text())
        models = sorted({str(m["tag"]) for s in info.get("services") or [] for m in s.get("models") or []})
        found.append({"tag": f"{info['name']}:{info['version']}", "labels": info.get("labels") or {},
                      "models": models, "args": info.get("args") or {}, "creation_time": str(info["creation_time"])})
    return sorted(found, key=lambda b: b["creation_time"])


def models(store: Path, name: str = MODEL_NAME) -> list[str]:
    """The tags of the versions of model `name` in `store` (complete ones: see `clean`)."""
    return sorted(f"{name}:{v.name}" for v in (store / "models" / name).glob("*") if (v / "model.yaml").is_file())


def import_model(onnx_dir: str | Path, version: str | None = None, name: str = MODEL_NAME,
                 labels: dict[str, str] | None = None):
    """Copy the three export files into model `name:version` of the current store, directly (use
    `import_staged` for a store that others read); returns its tag."""
    import bentoml

    folder = Path(onnx_dir)
    missing = [str(file) for file in missing_files(folder)]
    if missing:
        raise FileNotFoundError(f"ONNX export incomplete, missing {missing} (run `dvc repro export`)")
    info = json.loads((folder / MODEL_JSON).read_text())
    metadata = {key: info[key] for key in METADATA_FIELDS if key in info}
    metadata["file_sizes"] = {file: (folder / file).stat().st_size for file in FILES}  # what `clean` checks
    tags = {"framework": "onnxruntime", "fingerprint": fingerprint(folder),
            "params_hash": str(info.get("params_hash", "")), "git_revision": str(info.get("git_revision", ""))[:12],
            **(labels or {})}
    with bentoml.models.create(f"{name}:{version}" if version else name, labels=tags, metadata=metadata) as model:
        for file in FILES:
            shutil.copy2(folder / file, model.path_of(file))
    return model.tag


def build_bento(onnx_dir: str | Path, bentofile: str | Path, version: str, labels: dict[str, str] | None = None,
                args: dict[str, str] | None = None):
    """In the current store: `import_model` as `object-removal:<version>`, then `bentoml build` of `bentofile`
    (build context: its folder) with the model's tag as Bento argument `model` and as label (and the
    fingerprint as label). Must run in a
    fresh process (the build imports the service module, which reads its arguments once)."""
    import bentoml

    model_tag = import_model(onnx_dir, version, labels=labels)
    pinned = {"model": str(model_tag), **(args or {})}
    labels = {**(labels or {}), "model": str(model_tag), "fingerprint": fingerprint(onnx_dir)}
    bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(Path(bentofile).resolve().parent),
                                           labels=labels, args=pinned)
    return bento, model_tag


@contextmanager
def staging(root: Path) -> Iterator[Path]:
    """A fresh BentoML home under `root/.staging`, named after this process; deleted after the block."""
    folder = root / STAGING / f"{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def in_store(store: Path, command: list[str]) -> dict:
    """`python -m serving.store <command>` with `store` as its BentoML home; its JSON answer."""
    env = {**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "True"}
    done = subprocess.run([sys.executable, "-m", "serving.store", *command], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], preexec_fn=_die_with(os.getpid()))
    if done.returncode != 0:
        raise RuntimeError(f"serving.store {command[0]} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _die_with(parent: int):
    """A `preexec_fn` that has the kernel SIGKILL the child when `parent` dies (Linux; elsewhere None)."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def publish(source: Path, target: Path) -> list[str]:
    """Move every model and Bento version of store `source` into store `target`, one atomic rename each;
    versions `target` already has are left alone. Returns the tags moved."""
    moved = []
    for kind, _ in KINDS:
        for version in sorted((source / kind).glob("*/*")):
            destination = target / kind / version.parent.name / version.name
            if not version.is_dir() or destination.exists():
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(version, destination)
            (destination.parent / "latest").write_text(version.name)  # the newest published one
            moved.append(f"{version.parent.name}:{version.name}")
    return moved


def clean(store: Path, name: str = MODEL_NAME) -> list[str]:
    """Delete what a killed import left: staging folders of dead processes, and versions of `name` (models
    and Bentos) whose manifest or files are missing. Returns the paths deleted."""
    import psutil

    removed = []
    for folder in sorted((store / STAGING).glob("*")):
        pid = folder.name.split("-")[0]
        if not (pid.isdigit() and psutil.pid_exists(int(pid)) and int(pid) != os.getpid()):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    for kind, manifest in KINDS:
        for version in sorted((store / kind / name).glob("*")):
            if version.is_dir() and not _complete(version, manifest):
                shutil.rmtree(version, ignore_errors=True)
                removed.append(str(version))
        latest = store / kind / name / "latest"
        if latest.is_file() and not (latest.parent / latest.read_text().strip()).is_dir():
            latest.unlink()  # BentoML recreates it from what is there
    return removed


def _complete(version: Path, manifest: str) -> bool:
    if not (version / manifest).is_file():
        return False
    if manifest != "model.yaml":
        return True
    import yaml

    sizes = (yaml.safe_load((version / manifest).read_text()).get("metadata") or {}).get("file_sizes", {})
    return all((version / file).is_file() and (version / file).stat().st_size == size for file, size in sizes.items())


def import_staged(onnx_dir: str | Path, version: str, store: Path | None = None) -> str:
    """`import_model` into `store` (default: this process's) through a staging store; returns the tag."""
    store = store or home()
    clean(store)
    with staging(store) as stage:
        tag = in_store(stage, ["import", str(onnx_dir), "--version", version])["model"]
        publish(stage, store)
    return tag


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.store", description=__doc__.split("\n\n")[1])
    sub = parser.add_subparsers(dest="command")
    imp = sub.add_parser("import", help="the export into this store, directly (no staging)")
    imp.add_argument("onnx_dir", type=Path)
    imp.add_argument("--version", required=True)
    build = sub.add_parser("build", help="import the export and build the Bento that pins it, in this store")
    build.add_argument("onnx_dir", type=Path)
    build.add_argument("bentofile", type=Path)
    build.add_argument("--version", required=True)
    build.add_argument("--labels", type=json.loads, default={})
    build.add_argument("--args", type=json.loads, default={})
    build.add_argument("--export", type=Path, help="also export the Bento to this file")
    raw = list(sys.argv[1:] if argv is None else argv)
    if not raw or raw[0] not in ("import", "build", "-h", "--help"):  # the short form: a staged import
        short = argparse.ArgumentParser(prog="python -m serving.store")
        short.add_argument("onnx_dir", nargs="?", default="models/onnx", type=Path)
        short.add_argument("--version", help="default: the export's fingerprint")
        args = short.parse_args(raw)
        print(import_staged(args.onnx_dir, args.version or fingerprint(args.onnx_dir)))
        return
    args = parser.parse_args(raw)
    if args.command == "import":
        print(json.dumps({"model": str(import_model(args.onnx_dir, args.version))}))
        return
    bento, model_tag = build_bento(args.onnx_dir, args.bentofile, args.version, args.labels, args.args)
    if args.export:
        import bentoml

        bentoml.bentos.export_bento(bento.tag, str(args.export.resolve()))  # absolute: BentoML reads relative as a URL
    print(json.dumps({"bento": str(bento.tag), "model": str(model_tag),
                      "models_in_bento": sorted({str(m.tag) for s in bento.info.services for m in s.models})}))


if __name__ == "__main__":
    main()
