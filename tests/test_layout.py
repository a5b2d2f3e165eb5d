"""The package's shape, as a newcomer relies on it: one folder per stage, no module at the root but the
few that belong there, no import circle, modules of a readable size, no two classes of one name, and a
wheel that carries every subpackage."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "baremetal"
ROOT_MODULES = {"__init__.py", "__main__.py", "errors.py"}
MAX_LINES = 420


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def runtime_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that `path` imports when it runs (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                 for node in ast.walk(block)}
    imported = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("baremetal"):
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            ours = [name for name in submodules if name in known]
            imported |= set(ours) if len(ours) == len(submodules) else {node.module, *ours}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names if alias.name in known}
    return imported & set(known)


def test_no_module_at_the_package_root_but_errors_and_main():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == sorted(ROOT_MODULES)


def test_no_import_circle_between_our_modules():
    known = modules()
    graph = {name: runtime_imports(path, known) - {name} for name, path in known.items()}
    circles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circles.append(trail[trail.index(target):] + [target] if target in trail else [name, target])
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_modules_stay_readable():
    long = {str(path.relative_to(REPO)): count for path in PACKAGE.rglob("*.py")
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_no_two_classes_share_a_name():
    where = defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(str(path.relative_to(REPO)))
    assert {name: files for name, files in where.items() if len(files) > 1} == {}


@pytest.mark.e2e
def test_the_wheel_carries_every_subpackage_and_the_templates(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("baremetal-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(path.parent.relative_to(REPO)) for path in PACKAGE.rglob("__init__.py")}
    assert {package for package in packages if f"{package}/__init__.py" not in names} == set()
    assert "baremetal/_templates/confd/program.conf.j2" in names
    assert "baremetal/_templates/systemd/baremetal.service.j2" in names
    assert "baremetal/config/starters/gpu-node.toml" in names
