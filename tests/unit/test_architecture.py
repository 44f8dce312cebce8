"""The layering of `docs/architecture.md`, checked from the sources: no import cycles between
files or packages, dependencies pointing one way, and other packages using only a package's
public surface (its `__init__.py`'s `__all__`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cluster", "ingest", "models", "teachers", "students", "orchestration", "planning")
LAYER = {"cluster": 0, "ingest": 1, "models": 2, "teachers": 3, "students": 4, "planning": 5, "orchestration": 6}
GENERATED = ("teachers/proto/",)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[tuple[str, tuple[str, ...]]]:
    """(module, names) of every project import in the file, at any depth (lazy ones too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(alias.name, ()) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module, tuple(alias.name for alias in node.names)))
    return {(m, names) for m, names in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        targets = set()
        for target, names in _imports(path):
            for name in names or ("",):  # `from package import module` names a module
                target_module = f"{target}.{name}" if f"{target}.{name}" in MODULES else target
                if target_module in MODULES and target_module != module:
                    targets.add(target_module)
        graph[module] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph, or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_cycle_between_files():
    graph = {m: {t for t in targets if not MODULES[t].name == "__init__.py"} for m, targets in _graph().items()
             if not any(str(MODULES[m]).endswith(g) or g in str(MODULES[m]) for g in GENERATED)}
    assert _cycle(graph) == []


def test_packages_depend_one_way():
    """cluster <- ingest <- models <- teachers <- students <- planning <- orchestration: the
    data layer imports `cluster` only, the model builders the data layer and `cluster`, and planning imports no orchestration module (it is handed what it
    runs)."""
    wrong = sorted(f"{m} imports {t}" for m, targets in _graph().items() for t in targets
                   if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]])
    assert wrong == []


@pytest.mark.parametrize("package", PACKAGES)
def test_other_packages_import_only_the_public_surface(package):
    init = ROOT / package / "__init__.py"
    public = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            public = set(ast.literal_eval(node.value))
    assert public, f"{package}/__init__.py names no public surface (__all__)"
    private = sorted(f"{m} uses {target}.{name}" for m, path in MODULES.items() if not m.startswith(package)
                     for target, names in _imports(path) if target.split(".")[0] == package
                     for name in (names or ("",)) if target != package or name not in public)
    assert private == []


def test_students_reach_the_run_only_through_the_run_control():
    """No actor calls in students/: the Ray adapter of the run control lives in orchestration/."""
    calls = sorted(f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "students").rglob("*.py")
                   for n, line in enumerate(path.read_text().splitlines(), 1)
                   if ".remote(" in line or "get_actor(" in line or "ray.get(" in line)
    assert calls == []


def test_benchmarks_import_nothing_from_the_tests():
    """A benchmark runs after the README's first command, without pytest: what it shares with
    the tests lives in `harness/`."""
    wrong = sorted(f"{path.relative_to(ROOT)} imports {module}" for path in (ROOT / "benchmarks").rglob("*.py")
                   for node in ast.walk(ast.parse(path.read_text()))
                   for module in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                                  [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                   if module.split(".")[0] in ("tests", "pytest"))
    assert wrong == []


ROLE_NAMES = {"__init__", "config", "errors", "phases", "results", "hooks"}  # each package's or regime's own


def test_no_two_modules_share_a_name_for_different_jobs():
    """A module's name says its job: names repeat only for the role every package or regime
    has (its config section, its errors, a regime's phases, results and hooks)."""
    seen: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        if path.stem not in ROLE_NAMES:
            seen.setdefault(path.stem, []).append(module)
    assert {name: found for name, found in seen.items() if len(found) > 1} == {}


def test_a_source_is_a_data_source_unless_it_says_soft_targets():
    """Data sources (`data.source`, the user's files) live in the data layer; a source of soft
    targets is called a target source."""
    wrong = sorted(m for m, path in MODULES.items()
                   if "source" in path.stem and not m.startswith("ingest") and "target_source" not in path.stem)
    assert wrong == []


MAX_FILE_LINES, MAX_FUNCTION_LINES = 430, 62  # about 400 and 60: a file one reads whole, a function one screen


def test_files_and_functions_stay_readable():
    """A module that grows past about 400 lines holds two jobs; a function past about 60 lines,
    several steps that want names."""
    long_files = sorted(f"{m}: {n} lines" for m, path in MODULES.items()
                        if not any(g in str(path) for g in GENERATED)
                        and (n := len(path.read_text().splitlines())) > MAX_FILE_LINES)
    long_functions = sorted(f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
                            for m, path in MODULES.items() if not any(g in str(path) for g in GENERATED)
                            for node in ast.walk(ast.parse(path.read_text()))
                            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES)
    assert long_files == [] and long_functions == []


KD_MATH = ("students.losses", "students.teacher_merge", "students.kd_terms", "students.sparse_kd", "students.weighting")


def test_the_loss_takes_records_from_teachers_and_makes_its_tensors_itself():
    """One soft-target route: the KD math reads validated records (their types) from
    `teachers/` and merges them in `students.teacher_merge`; it calls nothing back there."""
    called_back = sorted(f"{m} uses {target}.{name}" for m in KD_MATH for target, names in _imports(MODULES[m])
                         if target.split(".")[0] == "teachers"
                         for name in names if name not in ("TeacherTargets", "SoftTargets"))
    assert called_back == []
