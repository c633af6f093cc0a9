"""Every code block of the user guide runs, in order, in one fresh folder.

Fences say what a block is:

- ```` ```python ```` runs on its own, in a namespace of its own (a reader may copy any one
  block: it imports what it uses);
- ```` ```python file=PATH ```` (or ``yaml``, ``toml``) is written to ``PATH``;
- ```` ```console ```` holds ``$ python -m tune_unlearn ...`` lines, run through the CLI's
  ``main`` in this process; each must exit 0, or with one of the codes listed as ``exit=0,1``.

A ``pyproject.toml`` block is the reader's package: it is built and installed for real by
pip (``pip install --no-deps --target``: the wheel and its ``.dist-info`` with the entry
points, into a scratch folder on the path), as the guide's ``pip install -e .`` would.
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tune_unlearn.cli import main
from tune_unlearn.methods import METHODS
from tune_unlearn.problems import PROBLEMS
from tune_unlearn.scoring.metrics import METRICS

# The standard library reads TOML from Python 3.11 on; the package itself supports 3.10.
tomllib = pytest.importorskip("tomllib")

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    options: dict[str, str]
    code: str
    line: int


def blocks(text: str) -> list[Block]:
    found = []
    for match in FENCE.finditer(text):
        options = dict(item.split("=", 1) for item in match.group(2).split())
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(match.group(1), options, match.group(3), line))
    return found


def install_project(project: Path, site: Path) -> None:
    """Build the reader's project and install it into ``site``, as pip does: a project the
    guide's pyproject.toml cannot build fails here."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(site),
            str(project),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"pip install of the guide's project failed:\n{done.stderr}"
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()


REGISTRIES = (METHODS, PROBLEMS, METRICS)


def fresh_process_registries(monkeypatch: pytest.MonkeyPatch, entries: list[dict[str, object]]) -> None:
    """Registries as a new ``python -m tune_unlearn`` process has them: entry points unread."""
    for registry, builtin in zip(REGISTRIES, entries, strict=True):
        monkeypatch.setattr(registry, "_entries", dict(builtin))
        monkeypatch.setattr(registry, "broken", {})
        monkeypatch.setattr(registry, "_plugins_loaded", False)


@pytest.fixture
def reader_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working folder on the path, and registries that will reload entry points."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_process_registries(monkeypatch, [dict(r._entries) for r in REGISTRIES])
    path = list(sys.path)
    yield tmp_path
    sys.path[:] = path
    for name in [m for m in sys.modules if m == "my_project" or m.startswith("my_project.")]:
        del sys.modules[name]


def test_the_guide_has_blocks_of_every_kind() -> None:
    found = blocks(GUIDE.read_text())
    kinds = {(b.language, "file" in b.options) for b in found}
    assert {("python", False), ("python", True), ("yaml", True), ("toml", True), ("console", False)} <= kinds


def test_every_code_block_of_the_guide_runs(
    reader_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    builtins = [dict(r._entries) for r in REGISTRIES]
    site = reader_folder.parent / "site"
    for block in blocks(GUIDE.read_text()):
        where = f"{GUIDE.name}:{block.line}"
        if "file" in block.options:
            path = reader_folder / block.options["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code)
            if path.name == "pyproject.toml":
                install_project(path.parent, site)
                fresh_process_registries(monkeypatch, builtins)
        elif block.language == "python":
            exec(compile(block.code, where, "exec"), {"__name__": "guide"})
        elif block.language == "console":
            allowed = {int(code) for code in block.options.get("exit", "0").split(",")}
            for command in [line[2:] for line in block.code.splitlines() if line.startswith("$ ")]:
                words = shlex.split(command)
                assert words[:3] == ["python", "-m", "tune_unlearn"], f"{where}: cannot run {command!r}"
                code = main(words[3:])
                assert code in allowed, f"{where}: {command!r} exited {code}\n{capsys.readouterr().err}"
        else:
            pytest.fail(f"{where}: a {block.language} block with no file= cannot be run")
    # The plugin section's last command lists the reader's method, installed by entry point.
    assert "normalized_graddiff" in capsys.readouterr().out


README = GUIDE.parents[1] / "README.md"
STUDIES = GUIDE.parents[1] / "studies"


TUTORIAL = GUIDE.parent / "tutorial.md"


def test_the_tutorial_shows_the_quickstart_study_file_as_it_is() -> None:
    quickstart = (STUDIES / "quickstart.yaml").read_text()
    yaml_blocks = [code for language, _, code in FENCE.findall(TUTORIAL.read_text()) if language == "yaml"]
    assert quickstart in yaml_blocks


def test_shipped_study_files_and_readme_commands_use_no_root_paths() -> None:
    """A newcomer's machine has no ``/shared``: every path a shipped file names is relative
    (or a URL), and each shipped study passes ``check``."""
    from tune_unlearn.study_file import load_study

    for path in sorted(STUDIES.glob("*.yaml")):
        config = load_study(path)
        assert config.references.cache_dir is None or not config.references.cache_dir.is_absolute(), path
        assert config.output is None or not config.output.is_absolute(), path


def plain_blocks(text: str) -> list[str]:
    """The fenced blocks with no language, walked fence by fence (a closing fence is not an
    opening one)."""
    found, current, language = [], [], None  # type: list[str], list[str], str | None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if language is None:
                language, current = line[3:].strip(), []
            else:
                if not language:
                    found.append("".join(current))
                language = None
        elif language is not None:
            current.append(line)
    return found


def test_the_documented_command_lines_are_the_parser_s() -> None:
    """docs/reference.md and the tutorial show :func:`synopsis` as it is generated now."""
    from tune_unlearn.cli import synopsis

    generated = synopsis() + "\n"
    for document in (GUIDE.parent / "reference.md", TUTORIAL):
        blocks_here = plain_blocks(document.read_text())
        assert generated in blocks_here, f"{document.name}: regenerate its command block from cli.synopsis()"


def test_the_study_file_reference_is_generated_from_the_models() -> None:
    """docs/study-file.md is what :mod:`tune_unlearn.config.study_file_doc` writes now: a key added,
    renamed or re-bounded in the models and not regenerated fails here."""
    from tune_unlearn.config.study_file_doc import study_file_reference

    page = GUIDE.parent / "study-file.md"
    assert page.read_text() == study_file_reference(), (
        "regenerate: python -m tune_unlearn.config.study_file_doc > docs/study-file.md"
    )
    for key in (
        "`relearning` | [RelearningSpec]",
        "`scope` | one of `request`, `stream`",
        "`n_trials` | integer | ≥ 1",
    ):
        assert key in page.read_text()
