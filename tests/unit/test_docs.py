"""The docs stay true: every config file the README and docs/ name exists and validates, every
`distillery` command and option they show exists, every relative link (and its anchor) resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {page: page.read_text() for page in PAGES}


def _named_configs() -> list[str]:
    found = set()
    for text in TEXT.values():
        found |= set(re.findall(r"(?<![\w/])((?:deploy|benchmarks|tests)/[\w./-]+\.ya?ml)", text))
    return sorted(found)


def _validate(path: Path) -> None:
    from cluster.config import load_yaml_model, read_yaml_file
    from orchestration.config import load_run_config
    from planning.sweep import load_sweep
    from teachers.config import TeacherConfig

    relative = path.relative_to(ROOT).as_posix()
    if relative.startswith("deploy/configs/teachers/"):
        load_yaml_model(TeacherConfig, path)
    elif relative.startswith(("deploy/configs/", "benchmarks/configs/", "tests/")):
        data = read_yaml_file(path)
        load_sweep(path) if "students" in data and "budgets" in data else load_run_config(path)
    else:  # manifests and the runtime env: well-formed YAML (the manifests' schemas: test_deploy_manifests)
        read_yaml_file(path)


@pytest.mark.parametrize("name", _named_configs())
def test_every_named_config_exists_and_validates(name):
    path = ROOT / name
    assert path.is_file(), f"{name} is named in the docs but does not exist"
    _validate(path)


def _commands() -> dict[tuple[str, ...], set[str]]:
    """{(command[, subcommand]): options shown with it} from every page."""
    out: dict[tuple[str, ...], set[str]] = {}
    for text in TEXT.values():
        for line in text.splitlines():
            for match in re.finditer(r"\bdistillery ((?:teacher )?[a-z][a-z-]*)([^`|]*)", line):
                command = tuple(match.group(1).split())
                out.setdefault(command, set()).update(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2)))
    return out


COMMANDS = _commands()


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_every_shown_command_and_option_exists(command):
    from orchestration.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, f"`distillery {' '.join(command)}` does not exist: {result.output}"
    missing = sorted(option for option in COMMANDS[command] if option not in result.output)
    assert not missing, f"`distillery {' '.join(command)}` has no option {missing}"


def _slug(heading: str) -> str:
    """The anchor of a markdown heading, as GitHub writes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _links() -> list[tuple[str, str]]:
    return sorted({(page.relative_to(ROOT).as_posix(), target) for page, text in TEXT.items()
                   for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://", target)})


@pytest.mark.parametrize("page,target", _links())
def test_every_relative_link_resolves(page, target):
    path_part, _, anchor = target.partition("#")
    path = (ROOT / page).parent / path_part if path_part else ROOT / page
    assert path.exists(), f"{page} links to {target}, which does not exist"
    if anchor:
        headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
        assert anchor in {_slug(h) for h in headings}, f"{page} links to #{anchor}, not a heading of {path_part}"


def test_the_readme_is_a_front_door():
    """The two commands first, then a short page that maps the docs."""
    readme = TEXT[ROOT / "README.md"]
    assert len(readme.splitlines()) <= 220
    commands = [line.strip() for line in readme.splitlines()[:12] if line.startswith("    python3 -m venv")]
    assert len(commands) == 2 and "distillery run deploy/configs/quickstart.yaml" in commands[0]
    assert "python -m pytest -q" in commands[1]
    assert all(f"docs/{page.name}" in readme for page in PAGES[1:])


def test_every_source_file_named_exists():
    """A page that names `students/train_loop.py` points at a file that is there."""
    named = {path for text in TEXT.values() for path in re.findall(
        r"(?<![\w/.])((?:cluster|teachers|students|orchestration|planning|benchmarks|tests|deploy|docs)/[\w/.-]+"
        r"\.(?:py|proto|md|sh|json))", text)}
    assert named and sorted(path for path in named if not (ROOT / path).exists()) == []
