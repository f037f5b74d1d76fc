"""The public face and the layering rules, as tests.

- `perpex.__all__` is frozen here: changing the public API is a decision made in this file
  (STYLE.md "A small public face"), not an accident.
- `perpex.core` imports only the standard library, numpy, msgspec and itself (DESIGN.md §3).
- `perpex.core` is pure (DESIGN.md §1): no clock, environment, files, network or global random
  generator, so no `time`, `datetime`, `random`, `os` ... imports and no `open(`. Also no
  `hash(`: str hashes change with PYTHONHASHSEED, which must not change a replay (§6.3).
- `perpex.sim` does not import `perpex.server` (DESIGN.md §3), once both exist.

The checks read the source with `ast`, so an import inside a function or under
`if TYPE_CHECKING:` counts the same as one at the top.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Final

import pytest

import perpex

SRC: Final = Path(perpex.__file__).resolve().parent
CORE: Final = SRC / "core"

PUBLIC_API: Final = [
    "Account",
    "Bracket",
    "Exchange",
    "ExchangeError",
    "Market",
    "MarketError",
    "Order",
    "Position",
    "Token",
    "TokenInfo",
]

CORE_THIRD_PARTY: Final = frozenset({"numpy", "msgspec"})
# Standard-library modules that read the clock, the environment, files, the network, other
# processes or a global random generator (DESIGN.md §1). `io` stays allowed (StringIO parses
# text the caller read) but `io.open` does not.
CORE_FORBIDDEN_MODULES: Final = frozenset(
    {
        "asyncio",
        "datetime",
        "glob",
        "http",
        "importlib",
        "os",
        "pathlib",
        "random",
        "secrets",
        "shutil",
        "socket",
        "subprocess",
        "tempfile",
        "threading",
        "time",
        "urllib",
        "uuid",
    }
)
CORE_FORBIDDEN_CALLS: Final = frozenset({"open", "hash", "__import__", "input"})


def python_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py")) if root.is_dir() else []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved.

    `source`, when given, is read as if it were the file at `path` (for testing the scanner).
    """
    text = path.read_text("utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                target = ".".join([*parts, node.module] if node.module else parts)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from numpy import random` and `from perpex import server` import submodules.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def top(module: str) -> str:
    return module.split(".", 1)[0]


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


CORE_FILES: Final = python_files(CORE)


def test_public_api_is_frozen() -> None:
    assert len(set(perpex.__all__)) == len(perpex.__all__), "duplicate names in __all__"
    assert sorted(perpex.__all__) == PUBLIC_API, (
        "perpex.__all__ changed: if that is intended, update PUBLIC_API in this test"
    )
    for name in PUBLIC_API:
        assert getattr(perpex, name) is not None


def test_star_import_gives_exactly_the_public_api() -> None:
    namespace: dict[str, object] = {}
    exec("from perpex import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC_API


def test_core_files_exist() -> None:
    assert {p.name for p in CORE_FILES} >= {"engine.py", "book.py", "ledger.py", "units.py"}


def test_the_import_scanner_sees_relative_and_nested_imports() -> None:
    """The checker itself, on source that pretends to be a new core module."""
    source = (
        "import os.path\n"
        "from . import book\n"
        "from .. import exchange\n"
        "def f():\n"
        "    from numpy import random\n"
    )
    modules = {m for _, m in imports_of(CORE / "probe.py", source)}
    assert {"os.path", "perpex.core.book", "perpex.exchange", "numpy.random"} <= modules


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_only_stdlib_numpy_msgspec_and_core(path: Path) -> None:
    bad = []
    for line, module in imports_of(path):
        root = top(module)
        if root == "perpex":
            if not is_within(module, "perpex.core") and module not in {"perpex", "perpex.core"}:
                bad.append((line, module))
        elif root not in sys.stdlib_module_names and root not in CORE_THIRD_PARTY:
            bad.append((line, module))
    assert not bad, f"{path.name} imports from outside the core's layer: {bad}"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_is_pure(path: Path) -> None:
    """No clock, environment, files, network, processes or global random in perpex.core."""
    bad = []
    for line, module in imports_of(path):
        if top(module) in CORE_FORBIDDEN_MODULES or is_within(module, "numpy.random"):
            bad.append((line, module))
    tree = ast.parse(path.read_text("utf-8"))
    numpy_aliases = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "numpy"
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in CORE_FORBIDDEN_CALLS:
                bad.append((node.lineno, f"{func.id}("))
            elif isinstance(func, ast.Attribute) and func.attr == "open":
                bad.append((node.lineno, f"{ast.unparse(func)}("))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "random"
            and isinstance(node.value, ast.Name)
            and node.value.id in numpy_aliases
        ):
            bad.append((node.lineno, f"{node.value.id}.random"))
    assert not bad, f"{path.name} breaks the determinism rule (DESIGN.md §1): {bad}"


SIM_FILES: Final = python_files(SRC / "sim")


@pytest.mark.skipif(not SIM_FILES, reason="perpex.sim does not exist yet")
@pytest.mark.parametrize("path", SIM_FILES or [None], ids=lambda p: p.name if p else "none")
def test_sim_does_not_import_server(path: Path) -> None:
    bad = [(line, m) for line, m in imports_of(path) if is_within(m, "perpex.server")]
    assert not bad, f"{path.name} imports the server: {bad}"
