"""The review package sits below the pipeline and the surfaces: none of its modules
imports them, directly or through another confessional module."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
REVIEW = SRC / "confessional" / "review"

FORBIDDEN = (
    "confessional.pipeline",
    "confessional.options",
    "confessional.background",
    "confessional.langchain",
    "confessional.langgraph",
    "confessional._callbacks",
    "confessional._graph",
    "confessional._control",
    "confessional.control",
    "confessional.cli",
)


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The confessional modules ``path`` imports, anywhere in the file (lazy ones too)."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from confessional import semconv`` imports a module too.
            found.update(
                f"{base}.{alias.name}"
                for alias in node.names
                if _module_file(f"{base}.{alias.name}") is not None
            )
    # The root package runs first whatever is imported; its own imports are not ours.
    return {name for name in found if name.startswith("confessional.")}


def _closure() -> dict[str, set[str]]:
    """Every confessional module reachable from the review package, with its imports."""
    todo = [_module_name(p) for p in sorted(REVIEW.rglob("*.py"))]
    seen: dict[str, set[str]] = {}
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = _imports(path)
        todo.extend(seen[name])
    return seen


def test_the_review_package_imports_neither_the_pipeline_nor_a_surface() -> None:
    reached = _closure()
    assert "confessional.review.inbox" in reached
    assert "confessional.telemetry" in reached  # followed through other modules
    offenders = {
        name: sorted(i for i in imports if i.startswith(FORBIDDEN))
        for name, imports in reached.items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_check_sees_imports_lazy_and_eager() -> None:
    # The surfaces' control module does import the pipeline: the parser must see it.
    assert "confessional.pipeline" in _imports(SRC / "confessional" / "_control.py")
    assert "confessional.semconv" in _imports(SRC / "confessional" / "telemetry.py")
