"""The README's two fresh-machine commands exist, and .ci/run runs exactly the test one."""

import re
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
