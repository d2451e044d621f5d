"""Every DVC stage depends on the code it runs. A stage's code is the import closure, inside this project, of
the module its command runs (`python -m <module>`), followed statically with `ast` (imports inside functions
included, `if TYPE_CHECKING:` blocks left out, non-empty package `__init__.py` files counted); for `package`
also the closure of the service that `bentoml build` imports and packs (bentofile.yaml's `service`). Each
file of it must be listed in the stage's `deps` in dvc.yaml, itself or a folder above it."""

from __future__ import annotations

import ast
import shlex
from collections import deque
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "pipelines", "serving")  # the project's own code


def module_file(name: str) -> Path | None:
    """The project file that module `name` is, or None for third-party and missing modules."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(file: Path) -> str:
    parts = file.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(file: Path) -> set[str]:
    """Every module `file` imports anywhere (a `from a import b` names both `a` and `a.b`)."""
    package = module_name(file) if file.name == "__init__.py" else module_name(file).rpartition(".")[0]
    found: set[str] = set()
    pending = deque([ast.parse(file.read_text(), str(file))])
    while pending:
        node = pending.popleft()
        if _type_checking(node):
            pending.extend(node.orelse)  # annotations only: not run
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        pending.extend(ast.iter_child_nodes(node))
    return found


def closure(modules: list[str]) -> dict[Path, list[str]]:
    """The project files that running `modules` executes, each with the import chain that reaches it."""
    chains: dict[Path, list[str]] = {}
    queue = deque((name, [name]) for name in modules)
    while queue:
        name, chain = queue.popleft()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            prefix = ".".join(parts[:depth])
            file = module_file(prefix)
            if file is None or file in chains:
                continue
            if file.name == "__init__.py" and not file.read_text().strip():
                continue  # an empty package marker runs nothing
            chains[file] = chain if prefix == name else [*chain[:-1], prefix]
            queue.extend((imported, [*chains[file], imported]) for imported in sorted(imported_modules(file)))
    return chains


def stage_modules(name: str, stage: dict) -> list[str]:
    words = shlex.split(stage["cmd"])
    assert words[:2] == ["python", "-m"], f"stage {name}: cmd {stage['cmd']!r} is not `python -m <module>`"
    modules = [words[2]]
    if name == "package":  # `bentoml build` imports the service and packs what it imports
        bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
        modules.append(bentofile["service"].split(":")[0])
    return modules


def missing_deps(name: str, stage: dict) -> list[str]:
    """The files of `name`'s import closure that its deps do not cover, each with how it is reached."""
    listed = [Path(d) for d in stage.get("deps", []) if "${" not in str(d)]
    problems = []
    for file, chain in sorted(closure(stage_modules(name, stage)).items()):
        relative = file.relative_to(REPO)
        if not any(relative == dep or dep in relative.parents for dep in listed):
            problems.append(f"stage {name}: dvc.yaml does not list {relative} (imported via {' -> '.join(chain)})")
    return problems


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", list(STAGES))
def test_each_stage_depends_on_every_project_file_it_runs(name):
    problems = missing_deps(name, STAGES[name])
    assert not problems, "\n".join(problems)


def test_a_missing_dependency_is_named_with_its_import_chain():
    stage = {"cmd": "python -m pipelines.stages.package", "deps": ["pipelines/stages/package.py", "serving"]}
    problems = missing_deps("package", stage)
    assert any("does not list components/images.py" in p and "serving.service" in p for p in problems), problems
    assert not any("serving/" in p.split(" (")[0] for p in problems)  # the folder covers serving/*
    lazy = closure(["pipelines.stages.package"])  # `in_store` is imported inside run(): still followed
    assert REPO / "serving" / "store.py" in lazy and REPO / "pipelines" / "common.py" in lazy
