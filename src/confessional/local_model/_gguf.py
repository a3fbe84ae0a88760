"""A minimal reader of GGUF metadata (the key/value header), with no dependency.

Only the header is read: the tensors that follow are never touched, so identifying a 1 GB
model costs a few megabytes of reading (mostly the tokenizer's vocabulary, which is skipped).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeAlias

from confessional.local_model._errors import LocalModelError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# Arrays longer than this (vocabularies, merges) are skipped and only their length is kept.
MAX_KEPT_ARRAY_LENGTH = 64
# Guards against reading a corrupt length as a gigantic allocation.
MAX_STRING_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 1_000_000


class GGUFFormatError(LocalModelError):
    """The file is not a GGUF file this reader understands."""


@dataclass(frozen=True)
class SkippedArray:
    """A long array the reader did not keep: its element type and length."""

    element_type: str
    length: int


GGUFValue: TypeAlias = int | float | bool | str | list["GGUFValue"] | SkippedArray

# Value type codes from the GGUF specification.
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(8, 13)

_SCALARS: dict[int, tuple[str, struct.Struct]] = {
    _UINT8: ("uint8", struct.Struct("<B")),
    _INT8: ("int8", struct.Struct("<b")),
    _UINT16: ("uint16", struct.Struct("<H")),
    _INT16: ("int16", struct.Struct("<h")),
    _UINT32: ("uint32", struct.Struct("<I")),
    _INT32: ("int32", struct.Struct("<i")),
    _FLOAT32: ("float32", struct.Struct("<f")),
    _BOOL: ("bool", struct.Struct("<?")),
    _UINT64: ("uint64", struct.Struct("<Q")),
    _INT64: ("int64", struct.Struct("<q")),
    _FLOAT64: ("float64", struct.Struct("<d")),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# llama.cpp's ``general.file_type`` codes (enum llama_ftype) for the common quantisations.
FILE_TYPE_NAMES: Mapping[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    30: "IQ4_XS",
    32: "BF16",
}


@dataclass(frozen=True)
class GGUFMetadata:
    """The header of a GGUF file: format version, tensor count and every metadata value."""

    version: int
    tensor_count: int
    values: Mapping[str, GGUFValue] = field(default_factory=dict)

    def get_str(self, key: str) -> str | None:
        value = self.values.get(key)
        return value if isinstance(value, str) else None

    def get_int(self, key: str) -> int | None:
        value = self.values.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def name(self) -> str | None:
        return self.get_str("general.name")

    @property
    def architecture(self) -> str | None:
        return self.get_str("general.architecture")

    @property
    def file_type(self) -> int | None:
        return self.get_int("general.file_type")

    @property
    def file_type_name(self) -> str | None:
        code = self.file_type
        if code is None:
            return None
        return FILE_TYPE_NAMES.get(code, f"type {code}")

    @property
    def license(self) -> str | None:
        return self.get_str("general.license")

    @property
    def context_length(self) -> int | None:
        arch = self.architecture
        return self.get_int(f"{arch}.context_length") if arch else None

    @property
    def chat_template(self) -> str | None:
        return self.get_str("tokenizer.chat_template")

    def summary(self) -> dict[str, str | int | None]:
        """The identifying fields, as stored in the weights manifest and ``results.json``."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "basename": self.get_str("general.basename"),
            "finetune": self.get_str("general.finetune"),
            "size_label": self.get_str("general.size_label"),
            "file_type": self.file_type,
            "file_type_name": self.file_type_name,
            "quantization_version": self.get_int("general.quantization_version"),
            "license": self.license,
            "context_length": self.context_length,
            "gguf_version": self.version,
            "tensor_count": self.tensor_count,
        }


def read_gguf_metadata(path: Path | str) -> GGUFMetadata:
    """Read the metadata header of the GGUF file at ``path``.

    Raises:
        GGUFFormatError: the file is not GGUF, has an unsupported version, or is truncated.
    """
    path = Path(path)
    with path.open("rb") as stream:
        try:
            return _read_header(stream)
        except GGUFFormatError as exc:
            raise GGUFFormatError(f"{path}: {exc}") from None
        except (struct.error, UnicodeDecodeError, EOFError) as exc:
            raise GGUFFormatError(f"{path}: malformed GGUF header ({exc})") from exc


def _read_header(stream: BinaryIO) -> GGUFMetadata:
    magic = stream.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(f"not a GGUF file (magic {magic!r})")
    version = _read(stream, _U32)
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFormatError(f"unsupported GGUF version {version}")
    tensor_count = _read(stream, _U64)
    entry_count = _read(stream, _U64)
    if entry_count > MAX_ENTRIES:
        raise GGUFFormatError(f"implausible metadata entry count {entry_count}")
    values: dict[str, GGUFValue] = {}
    for _ in range(entry_count):
        key = _read_string(stream)
        value_type = _read(stream, _U32)
        values[key] = _read_value(stream, value_type)
    return GGUFMetadata(version=version, tensor_count=tensor_count, values=values)


def _read_value(stream: BinaryIO, value_type: int) -> GGUFValue:
    if value_type == _STRING:
        return _read_string(stream)
    if value_type == _ARRAY:
        element_type = _read(stream, _U32)
        length = _read(stream, _U64)
        if length > MAX_KEPT_ARRAY_LENGTH:
            _skip_array(stream, element_type, length)
            return SkippedArray(_type_name(element_type), length)
        return [_read_value(stream, element_type) for _ in range(length)]
    scalar = _SCALARS.get(value_type)
    if scalar is None:
        raise GGUFFormatError(f"unknown metadata value type {value_type}")
    data = stream.read(scalar[1].size)
    if len(data) != scalar[1].size:
        raise GGUFFormatError("truncated GGUF header")
    value: int | float | bool = scalar[1].unpack(data)[0]
    return value


def _skip_array(stream: BinaryIO, element_type: int, length: int) -> None:
    if element_type == _STRING:
        for _ in range(length):
            _skip_string(stream)
        return
    if element_type == _ARRAY:
        for _ in range(length):
            _read_value(stream, _ARRAY)
        return
    scalar = _SCALARS.get(element_type)
    if scalar is None:
        raise GGUFFormatError(f"unknown array element type {element_type}")
    _skip(stream, scalar[1].size * length)


def _type_name(value_type: int) -> str:
    if value_type == _STRING:
        return "string"
    if value_type == _ARRAY:
        return "array"
    scalar = _SCALARS.get(value_type)
    return scalar[0] if scalar else f"type {value_type}"


def _read(stream: BinaryIO, layout: struct.Struct) -> int:
    data = stream.read(layout.size)
    if len(data) != layout.size:
        raise GGUFFormatError("truncated GGUF header")
    value: int = layout.unpack(data)[0]
    return value


def _read_string(stream: BinaryIO) -> str:
    length = _read(stream, _U64)
    if length > MAX_STRING_BYTES:
        raise GGUFFormatError(f"implausible string length {length}")
    data = stream.read(length)
    if len(data) != length:
        raise GGUFFormatError("truncated GGUF header")
    return data.decode("utf-8")


def _skip_string(stream: BinaryIO) -> None:
    length = _read(stream, _U64)
    if length > MAX_STRING_BYTES:
        raise GGUFFormatError(f"implausible string length {length}")
    _skip(stream, length)


_SKIP_BY_READING = 1024 * 1024


def _skip(stream: BinaryIO, count: int) -> None:
    if count <= _SKIP_BY_READING:
        # reading keeps the buffered stream's buffer; seeking would drop it on every string
        if len(stream.read(count)) != count:
            raise GGUFFormatError("truncated GGUF header")
        return
    start = stream.tell()
    # a seek past the end succeeds silently: compare with the real size to catch truncation
    end = stream.seek(0, 2)
    if start + count > end:
        raise GGUFFormatError("truncated GGUF header")
    stream.seek(start + count)
