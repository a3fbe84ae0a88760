"""The README's quick start is real code: it must run as written."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import REPO


def test_readme_quick_start_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)[0]
    namespace: dict[str, Any] = {}
    exec(compile(quick_start, "README.md", "exec"), namespace)
    confession = namespace["confession"]
    assert confession.verdict == "flag"
    assert confession.report.shortcuts


def test_readme_keeps_exactly_two_setup_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set up", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", setup, re.MULTILINE)
    assert commands == ["make demo", "make test"]
