"""The house rules the layout promises, read from the source: who may import whom, and short functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "naturelm_edge"
DEVICE_FORBIDDEN = {"cli", "serve", "distill", "export", "models", "quantization", "detection", "build", "bench",
                    "flash"}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "naturelm_edge" and len(parts) > 1 else None


def test_the_device_runtime_imports_no_torch_no_commands_and_no_server():
    for path in (PACKAGE / "edge_runtime").rglob("*.py"):
        for module in imports(path):
            assert module.split(".")[0] not in ("torch", "transformers"), (path, module)
            assert package_of(module) not in DEVICE_FORBIDDEN, f"{path.name} imports {module}"


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).parts
        source = relative[0].removesuffix(".py")
        targets = {package_of(m) for m in imports(path)} - {None, source}
        graph.setdefault(source, set()).update(targets)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a, {b}))
    # the command layer may be imported by nothing but itself; the rest of the graph must be acyclic
    assert cycles == [], cycles
    assert not any("cli" in targets for name, targets in graph.items() if name != "cli")


def test_tests_and_benchmarks_do_not_import_each_other():
    for folder, other in (("tests", "benchmarks"), ("benchmarks", "tests"), ("testbed", "tests"),
                          ("testbed", "benchmarks")):
        for path in (REPO / folder).rglob("*.py"):
            assert not any(m.split(".")[0] == other for m in imports(path)), f"{path} imports {other}"


def test_no_function_over_80_lines():
    long = []
    for folder in ("naturelm_edge", "benchmarks", "testbed"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > 80:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("naturelm_edge", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def file_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules a file imports, at any depth: ``from a import b`` names ``a.b`` when b is a module,
    else ``a`` itself; imports under ``if TYPE_CHECKING:`` are left out (they never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module in modules:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_circles_between_files():
    """A circle hides which file owns a contract, and is kept alive only by an import inside a function."""
    modules = module_files()
    graph = {name: file_imports(path, modules) - {name} for name, path in modules.items()}
    assert import_cycles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_ci_fails_a_run_where_a_test_skips(tmp_path):
    """``.ci/run`` installs every part: there a skip hides a missing part, so it must fail the run."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_one.py").write_text("import pytest\n\ndef test_skips():\n    pytest.skip('no such part')\n\n"
                                          "def test_runs():\n    pass\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "tests.conftest",
               "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    here = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    ci = subprocess.run(command, cwd=REPO, env={**env, "CI": "true"}, capture_output=True, text=True)
    assert here.returncode == 0 and "tests: 1 ran, 1 skipped" in here.stdout, here.stdout
    assert ci.returncode == 1 and "skipped test_one.py::test_skips: no such part" in ci.stdout, ci.stdout


def test_the_escalation_server_imports_no_training():
    """``edge serve`` runs the full model (``models/full.py``); distillation is not part of a server."""
    for path in (PACKAGE / "serve").rglob("*.py"):
        assert not any(package_of(m) in ("distill", "detection", "quantization") for m in imports(path)), path


def test_no_class_over_150_lines():
    """A class that carries a whole stage hides its parts; the build is a table of steps, the runner composes
    small parts."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 150:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert long == []


def test_every_source_file_is_in_git():
    """A package the .gitignore swallows works here and is missing from every clean clone."""
    import subprocess

    ignored = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "naturelm_edge", "benchmarks", "tests"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    work = ("benchmarks/.work/", "/scratch/")  # what benchmarks write while they run, never source
    assert [p for p in ignored if p.endswith((".py", ".toml", ".json", ".md")) and not any(w in p for w in work)] == []
