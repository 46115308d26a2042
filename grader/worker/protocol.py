"""The wire format between the judge and the worker: a JSON header and numpy arrays, nothing that runs code.

One message is a *frame*::

    b"DCW1" | header length (4 bytes, big endian) | header (UTF-8 JSON)
            | body length (8 bytes, big endian)   | body (an .npz archive, or empty)

The body is written with ``numpy.savez`` (no pickles) and read back member by
member with ``allow_pickle=False``, after checking every member's size, so a
hostile frame can at worst be refused: it cannot run code, and it cannot make
the reader allocate more than the limits it was given. Only boolean, integer
and floating-point arrays are accepted. File contents travel as ``uint8``
arrays.

This module imports only the standard library and numpy: the worker loads
it before anything else.
"""
import io
import json
import os
import select
import struct
import time
import zipfile
from typing import Dict, Optional, Tuple

import numpy as np

MAGIC = b"DCW1"
MAX_HEADER = 1 << 20
"""Bytes of JSON a header may hold."""
MAX_BODY = 64 << 20
"""Bytes of arrays one answer may hold (file contents included)."""
MAX_ARRAYS = 4096
ALLOWED_KINDS = "biuf"
"""numpy dtype kinds accepted: bool, signed and unsigned integers, floats."""

Arrays = Dict[str, np.ndarray]


class ProtocolError(Exception):
    """A frame that is malformed, too large, or that did not arrive in time; the message says which."""


def encode(header: dict, arrays: Optional[Arrays] = None) -> bytes:
    """One frame holding ``header`` and ``arrays``."""
    head = json.dumps(header, allow_nan=False).encode()
    body = b""
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **{name: np.ascontiguousarray(value) for name, value in arrays.items()})
        body = buffer.getvalue()
    return MAGIC + struct.pack(">I", len(head)) + head + struct.pack(">Q", len(body)) + body


def decode(frame: bytes, max_body: int = MAX_BODY) -> Tuple[dict, Arrays]:
    """``(header, arrays)`` from a whole frame; raises ``ProtocolError`` for anything else."""
    if len(frame) < 16 or frame[:4] != MAGIC:
        raise ProtocolError("the answer is not a frame of the grading protocol")
    (head_size,) = struct.unpack(">I", frame[4:8])
    if head_size > MAX_HEADER or len(frame) < 16 + head_size:
        raise ProtocolError("the answer's header is too long or cut short")
    header = parse_header(frame[8:8 + head_size])
    (body_size,) = struct.unpack(">Q", frame[8 + head_size:16 + head_size])
    body = frame[16 + head_size:]
    if body_size != len(body) or body_size > max_body:
        raise ProtocolError(f"the answer's data is {len(body)} bytes where {body_size} were announced "
                            f"(at most {max_body} are accepted)")
    return header, parse_arrays(body, max_body)


def parse_header(data: bytes) -> dict:
    try:
        header = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"the answer's header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ProtocolError("the answer's header is not a JSON object")
    return header


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def parse_arrays(body: bytes, max_body: int = MAX_BODY) -> Arrays:
    """The arrays of an .npz body, each checked for size and dtype before it is read."""
    if not body:
        return {}
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        members = archive.infolist()
        if len(members) > MAX_ARRAYS:
            raise ProtocolError(f"the answer holds {len(members)} arrays (at most {MAX_ARRAYS})")
        if sum(member.file_size for member in members) > max_body:
            raise ProtocolError(f"the answer's arrays would take more than {max_body} bytes")
        arrays = {}
        for member in members:
            if not member.filename.endswith(".npy"):
                raise ProtocolError(f"the answer holds a member {member.filename!r} that is not an array")
            name = member.filename[:-4]
            with archive.open(member) as stream:
                shape, dtype = _array_header(stream)
                if dtype.kind not in ALLOWED_KINDS:
                    raise ProtocolError(f"the array {name!r} has dtype {dtype}, only numbers are accepted")
                if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > member.file_size:
                    raise ProtocolError(f"the array {name!r} announces more data than it holds")
            with archive.open(member) as stream:
                arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
        return arrays
    except ProtocolError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever a hostile archive makes zipfile or numpy raise
        raise ProtocolError(f"the answer's data is not a valid array archive ({type(error).__name__})") from None


def _array_header(stream) -> Tuple[tuple, np.dtype]:
    """The shape and dtype an .npy member announces, read before any of its data."""
    version = np.lib.format.read_magic(stream)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
        raise ProtocolError(f"an array of .npy version {version} is not accepted")
    shape, _, dtype = read_header[version](stream)
    return shape, dtype


def read_frame(fd: int, deadline: Optional[float] = None, max_body: int = MAX_BODY) -> bytes:
    """Read one whole frame from the file descriptor ``fd`` by ``deadline`` (a ``time.monotonic`` value)."""
    start = _read_exactly(fd, 8, deadline)
    if start[:4] != MAGIC:
        raise ProtocolError("the answer is not a frame of the grading protocol")
    (head_size,) = struct.unpack(">I", start[4:])
    if head_size > MAX_HEADER:
        raise ProtocolError(f"the answer's header announces {head_size} bytes (at most {MAX_HEADER})")
    head = _read_exactly(fd, head_size + 8, deadline)
    (body_size,) = struct.unpack(">Q", head[-8:])
    if body_size > max_body:
        raise ProtocolError(f"the answer announces {body_size} bytes of data (at most {max_body} are accepted)")
    return start + head + _read_exactly(fd, body_size, deadline)


class Timeout(ProtocolError):
    """The deadline passed before the whole frame arrived."""


class Closed(ProtocolError):
    """The other end closed the channel (its process ended)."""


def _read_exactly(fd: int, size: int, deadline: Optional[float]) -> bytes:
    chunks, left = [], size
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise Timeout("no answer in time")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise Closed("the channel was closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
