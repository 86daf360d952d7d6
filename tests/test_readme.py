"""The README's two fresh-machine commands exist, and .ci/run runs exactly the test one."""

import re

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _fresh_machine_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_one_line_commands():
    commands = _fresh_machine_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    main_job, tests = commands
    assert main_job.split("&&")[-1].strip().startswith("havoc ask ")  # the main job is PRIME answering
    assert 'pip install ".[tools]"' in main_job
    assert tests.endswith("pytest") and '".[test]"' in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == _fresh_machine_commands()[1]


def _code_blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def _havoc_lines() -> list[tuple[str, str]]:
    """Every `havoc ...` command line in the README's and the docs' bash blocks (comments dropped)."""
    lines = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in _code_blocks(path, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #", 1)[0].strip()
                if line.startswith("havoc "):
                    lines.append((path.name, line))
    return lines


def test_every_documented_command_and_flag_exists():
    import shlex

    from havoc.cli import build_parser

    lines = _havoc_lines()
    assert len(lines) >= 20
    parser = build_parser()
    for where, line in lines:
        argv = shlex.split(line)[1:]
        if argv[0] not in parser._subparsers._group_actions[0].choices:  # noqa: SLF001
            argv = ["ask", *argv]  # `havoc "PROMPT"`
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"{where}: {line!r} does not parse") from e


def _run_snippet(code: str, cwd: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.model
def test_the_readme_python_snippets_run(tmp_path, smollm2_gguf):
    blocks = _code_blocks(ROOT / "README.md", "python")
    assert blocks
    for code in blocks:
        _run_snippet(code, tmp_path)


def test_the_engine_page_lower_level_snippet_runs(tmp_path):
    block = next(b for b in _code_blocks(ROOT / "docs" / "engine.md", "python") if "HavocModel(" in b)
    _run_snippet(block, tmp_path)
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
