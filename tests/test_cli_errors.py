"""Every user error of the CLI is one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from confessional import __version__
from confessional.cli import EXIT_USAGE, main


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["demo", "--model", "gpt-4o"],
            "confessional demo: error: model 'gpt-4o' is not of the form provider:model "
            "(e.g. openai:gpt-4.1-mini), 'local' or 'scripted'",
        ),
        (
            ["demo", "--model", "anthropic:claude-sonnet-4-5"],
            "confessional demo: error: model 'anthropic:claude-sonnet-4-5' needs an API key: "
            "set ANTHROPIC_API_KEY",
        ),
        (
            ["demo", "--model", "openai:gpt-4.1-mini"],
            "confessional demo: error: model 'openai:gpt-4.1-mini' needs an API key: "
            "set OPENAI_API_KEY (or OPENAI_BASE_URL for a local server)",
        ),
        (
            ["demo", "--model", "anthropic:x", "--base-url", "http://127.0.0.1:1"],
            "confessional demo: error: --base-url needs an openai:NAME model (an "
            "OpenAI-compatible server), got 'anthropic:x'",
        ),
        (
            ["demo", "--base-url", "http://127.0.0.1:1"],
            "confessional demo: error: --base-url needs --model openai:NAME",
        ),
        (
            ["demo", "--bogus"],
            "confessional: error: unrecognized arguments: --bogus (see: confessional --help)",
        ),
        (
            ["report", "/nonexistent/trace.jsonl"],
            "confessional report: error: cannot read /nonexistent/trace.jsonl: No such file "
            "or directory",
        ),
    ],
    ids=[
        "no-provider",
        "missing-anthropic-key",
        "missing-openai-key",
        "base-url-wrong-provider",
        "base-url-without-model",
        "unknown-option",
        "unreadable-file",
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _error_line(argv, capsys) == message


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(["frobnicate"], capsys)
    assert line.startswith("confessional: error: argument COMMAND: invalid choice: 'frobnicate'")
    assert "demo" in line
    assert "eval" in line
    assert line.endswith("(see: confessional --help)")


def test_unknown_provider_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(["demo", "--model", "nope:xyz"], capsys)
    assert line.startswith("confessional demo: error: unknown model provider 'nope' in 'nope:xyz'")
    assert "anthropic" in line
    assert "openai" in line


def test_missing_provider_package_names_the_package(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "test-key")
    monkeypatch.setitem(sys.modules, "langchain_mistralai", None)  # as if not installed
    line = _error_line(["demo", "--model", "mistralai:mistral-large-latest"], capsys)
    assert line == (
        "confessional demo: error: model 'mistralai:mistral-large-latest' needs the optional "
        "dependency 'langchain-mistralai'. Install it with: pip install langchain-mistralai"
    )


def test_bad_option_value_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(["eval", "--model", "scripted", "--runs", "many"], capsys)
    assert line == (
        "confessional eval: error: argument --runs: invalid int value: 'many' "
        "(see: confessional eval --help)"
    )


def test_unreadable_trace_file_content(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "trace.jsonl"
    garbage.write_text("not json\n")
    line = _error_line(["report", str(garbage)], capsys)
    assert line == f"confessional report: error: {garbage}: line 1 is not JSON: Expecting value"


def test_version_and_real_stderr_of_the_console_script() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "confessional", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0
    assert version.stdout.strip() == f"confessional {__version__}"
    bad = subprocess.run(
        [sys.executable, "-m", "confessional", "demo", "--model", "nope"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == EXIT_USAGE
    assert bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1
    assert "Traceback" not in bad.stderr
