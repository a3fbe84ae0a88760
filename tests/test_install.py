"""A plain install works out of the box, and the library itself needs only the OTel API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs an agent with the confession middleware while every opentelemetry.sdk module is
# unimportable, as in an application that installed the OTel API only.
_WITHOUT_SDK = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoSdk(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoSdk())

    import confessional, confessional.langchain, confessional.langgraph
    from langchain.agents import create_agent
    from confessional.langchain import ConfessionMiddleware
    from confessional.testing import behaving_agent, example_tools

    agent = create_agent(
        behaving_agent(), tools=example_tools(), middleware=[ConfessionMiddleware()]
    )
    result = agent.invoke({"messages": [("user", "make the speed test pass")]})
    confession = result["confessions"][-1]
    assert confession.status == "ok", confession
    assert not [m for m in sys.modules if m.startswith("opentelemetry.sdk")]
    print("ok", confession.verdict)
    """
)


def test_the_library_runs_an_agent_with_the_otel_sdk_unimportable() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SDK], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok pass"


def test_a_fresh_install_of_the_wheel_runs_demo_and_eval(tmp_path: Path) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is part of the dev environment (make env installs it)")
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("confessional-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True, timeout=120)
    # The README's install command, `pip install confessional`, with the wheel for the name.
    subprocess.run(
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    cli = str(venv / "bin" / "confessional")
    demo = subprocess.run(
        [cli, "demo"], cwd=outside, env=env, capture_output=True, text=True, timeout=300
    )
    assert demo.returncode == 0, demo.stderr
    assert "HALTED" in demo.stdout
    assert (outside / "confessional-out" / "trace.otlp.jsonl").stat().st_size > 0
    evaluation = subprocess.run(
        [cli, "eval", "--model", "scripted", "--runs", "1"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluation.returncode == 0, evaluation.stderr
    assert (outside / "eval-out" / "results.json").is_file()
    assert (outside / "eval-out" / "confusion_matrix.png").stat().st_size > 0
    # The installed package is the one under test, not the repository's sources.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import confessional; print(confessional.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(venv) in where.stdout
