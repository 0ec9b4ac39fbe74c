"""The README's commands and first Python example must stay true."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).parent.parent / "README.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_has_two_commands() -> None:
    section = README.read_text().split("## Quick start", 1)[1]
    commands = code_blocks("bash")[0].strip().splitlines()
    assert section.index("```bash") < section.index("##")
    assert len(commands) == 2
    assert commands[0].endswith("aelab demo")
    assert commands[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    assert code_blocks("bash")[0].strip().splitlines()[1] in ci


@pytest.mark.slow
def test_python_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(code_blocks("python")[0], namespace)  # noqa: S102
    codes, error = namespace["codes"], namespace["error"]
    assert codes.shape == (1797, 8)
    assert error.shape == (1797,)
    assert float(np.mean(error)) < 0.02
    assert (tmp_path / "digits.model" / "model.safetensors").is_file()


def readme_command_lines() -> list[str]:
    lines = []
    for block in code_blocks("bash")[1:]:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if "aelab " in line and not line.startswith("python3 -m venv"):
                lines.append(line[line.index("aelab ") :])
    return lines


@pytest.mark.parametrize("line", readme_command_lines())
def test_readme_command_parses(line: str) -> None:
    import shlex

    from aelab.cli.main import build_parser

    try:
        build_parser().parse_args(shlex.split(line)[1:])
    except SystemExit as exit:
        pytest.fail(f"README command does not parse: {line} (exit {exit.code})")
