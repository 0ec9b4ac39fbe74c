"""The ``.aelc`` file format: one compressed image in a self-checking container.

Layout, all integers little-endian::

    offset  size  field
    0       4     magic, the bytes ``AELC``
    4       1     format version, 1
    5       1     kind: 1 = image, 2 = table (see ``tables.py``)
    6       1     n, the length of the model identifier (1 to 255)
    7       n     model identifier, UTF-8
    7+n     16    model hash: the first 16 bytes of the SHA-256 of the model's
                  ``model.safetensors``
    23+n    4     image height in pixels (u32)
    27+n    4     image width in pixels (u32)
    31+n    1     channels: 1 gray, 2 gray + alpha, 3 RGB, 4 RGB + alpha
    32+n    1     bit depth of the original: 8 or 16
    33+n    1     quality, 1-based
    34+n    1     reserved, 0
    35+n    4     latent length L in bytes (u32), a multiple of 4
    39+n    4     alpha length A in bytes (u32), 0 without alpha
    43+n    L     range-coded latent (32-bit words)
    43+n+L  A     alpha channel as zlib-compressed 8- or 16-bit samples (lossless)
    end-4   4     CRC-32 of every byte before it

The reader checks the magic, version, lengths and CRC before it decodes anything,
so a truncated or altered file raises an error instead of producing an image.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import InvalidDataError

MAGIC = b"AELC"
VERSION = 1
KIND_IMAGE = 1
KIND_TABLE = 2
HASH_BYTES = 16
_FIXED = struct.Struct("<IIBBBBII")
SUFFIX = ".aelc"


class CorruptFileError(InvalidDataError):
    """A compressed file is truncated, altered, or not an aelab file."""


@dataclass
class CompressedImage:
    """Everything a ``.aelc`` file stores."""

    model_id: str
    model_hash: bytes
    height: int
    width: int
    channels: int
    bit_depth: int
    quality: int
    latent: bytes
    alpha: bytes = b""
    kind: int = KIND_IMAGE

    def to_bytes(self) -> bytes:
        model_id = self.model_id.encode("utf-8")
        if not 1 <= len(model_id) <= 255 or len(self.model_hash) != HASH_BYTES:
            raise ValueError("model identifier must be 1-255 bytes, hash 16 bytes")
        body = b"".join(
            [
                MAGIC,
                bytes([VERSION, self.kind, len(model_id)]),
                model_id,
                self.model_hash,
                _FIXED.pack(
                    self.height,
                    self.width,
                    self.channels,
                    self.bit_depth,
                    self.quality,
                    0,
                    len(self.latent),
                    len(self.alpha),
                ),
                self.latent,
                self.alpha,
            ]
        )
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "the file") -> CompressedImage:
        """Parse and check a file's bytes; raise CorruptFileError naming ``name``."""
        if len(data) < 4 or data[:4] != MAGIC:
            raise CorruptFileError(
                f"{name} is not an aelab compressed file (it does not start with "
                f"{MAGIC!r}); pass a file written by 'aelab compress'"
            )
        if len(data) < 7:
            raise _truncated(name)

        version, kind, id_length = data[4], data[5], data[6]
        if version > VERSION:
            raise CorruptFileError(
                f"{name} uses compressed format version {version}, but this aelab "
                f"reads version {VERSION}; upgrade aelab (pip install -U aelab) to "
                "decompress it"
            )
        if version < VERSION:
            raise CorruptFileError(
                f"{name} declares format version {version}, which no aelab wrote; "
                "the file is damaged, nothing was decoded"
            )
        if kind not in (KIND_IMAGE, KIND_TABLE):
            raise CorruptFileError(
                f"{name} contains data of unknown kind {kind}; this aelab decodes "
                f"images (kind {KIND_IMAGE}) and tables (kind {KIND_TABLE})"
            )

        header_end = 7 + id_length + HASH_BYTES + _FIXED.size
        if len(data) < header_end + 4:
            raise _truncated(name)
        fields = _FIXED.unpack_from(data, 7 + id_length + HASH_BYTES)
        latent_length, alpha_length = fields[6], fields[7]
        expected = header_end + latent_length + alpha_length + 4
        if len(data) < expected:
            raise _truncated(name, len(data), expected)
        if len(data) > expected:
            raise CorruptFileError(
                f"{name} has {len(data) - expected} bytes after its end; it was "
                "altered or joined with another file"
            )

        (crc,) = struct.unpack_from("<I", data, expected - 4)
        if zlib.crc32(data[: expected - 4]) != crc:
            raise CorruptFileError(
                f"{name} fails its checksum: some bytes were changed after it was "
                "written; nothing was decoded"
            )

        try:
            model_id = data[7 : 7 + id_length].decode("utf-8")
        except UnicodeDecodeError as err:
            raise CorruptFileError(f"{name} has an invalid model identifier") from err
        height, width, channels, bit_depth, quality = fields[:5]
        if kind == KIND_TABLE:
            if not (height and width) or channels or bit_depth != 32 or alpha_length:
                raise CorruptFileError(f"{name} has an invalid table header")
        elif not (height and width and channels in (1, 2, 3, 4)):
            raise CorruptFileError(
                f"{name} declares an impossible image ({height}x{width}, "
                f"{channels} channels)"
            )
        elif bit_depth not in (8, 16) or latent_length % 4:
            raise CorruptFileError(f"{name} has an invalid header")
        start = header_end
        return cls(
            model_id=model_id,
            model_hash=data[7 + id_length : 7 + id_length + HASH_BYTES],
            height=height,
            width=width,
            channels=channels,
            bit_depth=bit_depth,
            quality=quality,
            latent=data[start : start + latent_length],
            alpha=data[start + latent_length : start + latent_length + alpha_length],
            kind=kind,
        )


def open_file(
    data: bytes, name: str, kind: int, model_id: str, model_hash: bytes
) -> CompressedImage:
    """Parse ``data`` and check that it contains ``kind`` written by this model.

    Raises:
        CorruptFileError: The bytes are truncated, altered, or not an aelab file.
        InvalidDataError: The file contains the other kind, or another model wrote
            it.
    """
    file = CompressedImage.from_bytes(data, name)
    if file.kind != kind:
        if kind == KIND_IMAGE:
            found, expected = "a table", "an image"
        else:
            found, expected = "an image", "a table"
        raise InvalidDataError(
            f"{name} contains {found}, not {expected}; decompress it with --model set "
            "to the model that compressed it"
        )
    if file.model_hash != model_hash:
        raise InvalidDataError(
            f"{name} was compressed with the model {file.model_id!r} (hash "
            f"{file.model_hash.hex()}), not with {model_id!r} (hash "
            f"{model_hash.hex()}); pass that model's folder with --model"
        )
    return file


def _truncated(name: str, size: int | None = None, expected: int | None = None):
    sizes = f" ({size} of {expected} bytes)" if size is not None else ""
    return CorruptFileError(
        f"{name} is truncated{sizes}; copy it again from its source, nothing was "
        "decoded"
    )
