"""The layout of src/mrl: every module lives in a subpackage, imports run one way between the
subpackages (each one's `MAY_IMPORT`, in its `__init__.py`), and no import cycle exists
anywhere. An AST walk, so imports inside functions count as much as those at the top."""

from __future__ import annotations

import ast
import shutil
from collections import deque
from pathlib import Path

import pytest

from tests.conftest import ROOT

SRC = ROOT / "src" / "mrl"


def module_name(path: Path, src: Path) -> str:
    """`src/mrl/core/qat.py` -> `mrl.core.qat`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, src: Path, known: set[str]) -> set[str]:
    """The mrl modules `path` imports anywhere in its body: `from mrl.a import b` names the
    module `mrl.a.b` when that is one, else `mrl.a`; relative imports are resolved."""
    here = module_name(path, src)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "mrl")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "mrl":
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m != here}


def is_entry_shim(tree: ast.Module) -> bool:
    """A top-level `python -m mrl.NAME` shim: a docstring, `from mrl.PKG.MOD import main` and
    `if __name__ == "__main__": main()`, nothing else."""
    body = [
        n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    return (
        len(body) == 2
        and isinstance(body[0], ast.ImportFrom)
        and (body[0].module or "").count(".") == 2
        and [a.name for a in body[0].names] == ["main"]
        and isinstance(body[1], ast.If)
        and ast.unparse(body[1].test) == "__name__ == '__main__'"
        and ast.unparse(body[1]).endswith("main()")
        and len(body[1].body) == 1
    )


def may_import(init: Path) -> tuple[str, ...] | None:
    """A subpackage's `MAY_IMPORT` tuple, read from its `__init__.py` without importing it."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "MAY_IMPORT" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    return None


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import path from `start` back to itself, or None."""
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return None


def layout_problems(src: Path) -> list[str]:
    """Every way `src` (a copy of src/mrl) breaks the layout, one line each."""
    problems = []
    files = sorted(src.rglob("*.py"))
    known = {module_name(p, src) for p in files}
    packages = {p.parent.name: p for p in src.glob("*/__init__.py")}
    allowed = {}
    for name, init in packages.items():
        allowed[name] = may_import(init)
        if allowed[name] is None:
            problems.append(f"mrl.{name} has no MAY_IMPORT in {init.relative_to(src.parent)}.")
            allowed[name] = ()
        for other in allowed[name]:
            if other not in packages:
                problems.append(f"mrl.{name}: MAY_IMPORT names {other!r}, not a subpackage.")
    shims = set()
    for path in src.glob("*.py"):
        if path.name == "__init__.py":
            continue
        if is_entry_shim(ast.parse(path.read_text())):
            shims.add(module_name(path, src))
        else:
            problems.append(
                f"{module_name(path, src)} sits outside the subpackages; move it into one "
                "(only __init__.py and `python -m` shims live in src/mrl/)."
            )
    graph = {}
    for path in files:
        here = module_name(path, src)
        graph[here] = imported_modules(path, src, known)
        mine = here.split(".")[1] if here.count(".") else None
        for target in sorted(graph[here]):
            if target in shims:
                problems.append(f"{here} imports {target}, a command-line shim; import its module.")
                continue
            theirs = target.split(".")[1] if target.count(".") else None
            if here in shims or mine is None or theirs is None or theirs == mine:
                continue
            if theirs not in allowed.get(mine, ()):
                may = ", ".join(allowed.get(mine, ())) or "nothing of mrl"
                problems.append(
                    f"{here} imports {target}: mrl.{mine} may import only {may} "
                    f"(MAY_IMPORT in src/mrl/{mine}/__init__.py)."
                )
    package_graph = {f"mrl.{p}": {f"mrl.{o}" for o in allowed[p]} for p in allowed}
    for what, edges in (("MAY_IMPORT cycle", package_graph), ("import cycle", graph)):
        seen = set()
        for name in sorted(edges):
            cycle = shortest_cycle(edges, name)
            if cycle and frozenset(cycle) not in seen:
                seen.add(frozenset(cycle))
                problems.append(f"{what}: {' -> '.join(cycle)}.")
    return problems


def test_src_mrl_keeps_its_layout():
    problems = layout_problems(SRC)
    assert not problems, "\n".join(problems)


def test_every_subpackage_says_what_lives_there():
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import:" in doc, f"{init}: its docstring says nothing of what it may import"
        said = doc.split("May import:")[1].split("\n\n")[0]
        named = tuple(p.strip(" .\n").removeprefix("mrl.") for p in said.split(","))
        assert named == (may_import(init) or ("nothing of mrl",)), (
            f"{init}: docstring vs MAY_IMPORT"
        )
        modules = sorted(p.stem for p in init.parent.glob("*.py") if p.stem[0] != "_")
        missing = [m for m in modules if f"`{m}`" not in doc]
        assert not missing, f"{init}: its docstring leaves out {missing}"


@pytest.fixture
def src_copy(tmp_path) -> Path:
    copy = tmp_path / "mrl"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layout_problems(copy) == []
    return copy


def _plant(path: Path, line: str, inside_function: bool = False) -> None:
    text = path.read_text()
    if inside_function:
        text += f"\n\ndef _planted():\n    {line}\n"
    else:
        text = text.replace(
            "from __future__ import annotations\n",
            f"from __future__ import annotations\n\n{line}\n",
            1,
        )
    path.write_text(text)


def test_a_planted_cycle_inside_a_subpackage_is_named(src_copy):
    # objective imports layers; layers importing objective (even lazily) closes a cycle
    _plant(
        src_copy / "core" / "layers.py", "from mrl.core.objective import TrainingObjective", True
    )
    problems = layout_problems(src_copy)
    assert problems == ["import cycle: mrl.core.layers -> mrl.core.objective -> mrl.core.layers."]


def test_an_import_against_the_direction_is_named(src_copy):
    _plant(src_copy / "core" / "schedule.py", "from mrl.run.build import build")
    problems = layout_problems(src_copy)
    assert problems[0] == (
        "mrl.core.schedule imports mrl.run.build: mrl.core may import only common "
        "(MAY_IMPORT in src/mrl/core/__init__.py)."
    )
    assert any(p.startswith("import cycle: mrl.core.schedule -> mrl.run.build") for p in problems)


def test_tools_and_report_never_import_the_training_application(src_copy):
    _plant(src_copy / "tools" / "demo.py", "from mrl.run.train import main as train_main", True)
    problems = layout_problems(src_copy)
    assert problems == [
        "mrl.tools.demo imports mrl.run.train: mrl.tools may import only common, core, encoder, "
        "data, artifacts, evaluation (MAY_IMPORT in src/mrl/tools/__init__.py)."
    ]


def test_a_flat_module_and_a_package_cycle_are_named(src_copy):
    (src_copy / "helpers.py").write_text('"""Loose."""\n')
    init = src_copy / "common" / "__init__.py"
    init.write_text(init.read_text().replace("MAY_IMPORT = ()", 'MAY_IMPORT = ("core",)'))
    problems = layout_problems(src_copy)
    assert "mrl.helpers sits outside the subpackages" in problems[0]
    assert "MAY_IMPORT cycle: mrl.common -> mrl.core -> mrl.common." in problems
