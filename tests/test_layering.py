"""The package's layering: nothing outside ``diffloss.cli`` imports it (the CLI only parses and prints, over the
library), checked on the import statements of every module, experiment script and benchmark."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import``/``from ... import`` in ``path`` names (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def sources() -> list[Path]:
    """Every library module but ``diffloss.cli`` itself and ``diffloss.__main__`` (``python -m diffloss``, the
    command's entry point, which sits above the CLI), plus the experiment and benchmark scripts."""
    top = ROOT / "src" / "diffloss"
    files = [p for p in top.rglob("*.py") if p.relative_to(top).parts[0] not in ("cli", "__main__.py")]
    return files + sorted((ROOT / "experiments").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


def test_nothing_below_the_cli_imports_it():
    def is_cli(module: str) -> bool:
        return module == "diffloss.cli" or module.startswith("diffloss.cli.")

    back_edges = {str(p.relative_to(ROOT)): sorted(filter(is_cli, imported_modules(p))) for p in sources()}
    back_edges = {k: v for k, v in back_edges.items() if v}
    assert not back_edges, f"modules outside diffloss.cli import it: {back_edges}"


def test_the_walker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from diffloss.cli.common import parse_seeds\n")
    assert "diffloss.cli.common" in imported_modules(f)


ENTRY_MODULES = (
    "diffloss.objective",
    "diffloss.optimal",
    "diffloss.optimal.floor",
    "diffloss.optimal.reference",
    "diffloss.train",
    "diffloss.loader",
    "diffloss.diagnose_output",
    "diffloss.density",
    "diffloss.weighting",
    "diffloss.precond",
    "diffloss.bridge",
)


def test_entry_modules_import_first_without_a_cycle():
    """Each module a user may import first imports in a fresh interpreter (a circular import shows only then)."""
    import subprocess
    import sys

    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:2]]"
    procs = {m: subprocess.Popen([sys.executable, "-c", code, m], stderr=subprocess.PIPE) for m in ENTRY_MODULES}
    failed = {m: p.communicate()[1].decode().strip().splitlines()[-1:] for m, p in procs.items() if p.wait() != 0}
    assert not failed, failed
