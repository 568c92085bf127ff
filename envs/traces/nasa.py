"""Reader for the NASA Kennedy Space Center WWW server trace, July and August 1995.

The published per-second series is one text file, ``workload.txt``, usually
shipped as the bzip2-compressed tar ``workload.tbz2``. It contains
whitespace-separated whole numbers, the count of HTTP requests logged in
each consecutive 1-second slot. Slot 0 is 1995-07-01 00:00:01 (-0400). The July
and August logs follow each other directly, so the 3.4-day gap between them
is not in the series, while the 37.7-hour outage of 1-3 August is a run of
zeros from slot 2,435,065 on.
"""

from __future__ import annotations

import math
import re
import tarfile
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import numpy as np

from envs.traces.errors import TraceFormatError
from envs.traces.parsing import MAX_TRACE_SPAN_S, shown
from envs.traces.readers import MAX_RATE_PER_S, SERVEGEN_MEAN_INPUT_TOKENS, SERVEGEN_MEAN_OUTPUT_TOKENS
from envs.traces.records import RateTrace

NASA_SLOT_S = 1.0
NASA_MEMBER = "workload.txt"
# NOTE: like the ServeGen defaults, an assumption for a chat service and not
# data: the web log has no token counts.
NASA_MEAN_INPUT_TOKENS = SERVEGEN_MEAN_INPUT_TOKENS
NASA_MEAN_OUTPUT_TOKENS = SERVEGEN_MEAN_OUTPUT_TOKENS

# The maximum number of slots in a series: one per second of the longest trace span.
MAX_NASA_SLOTS = int(MAX_TRACE_SPAN_S / NASA_SLOT_S)
# The largest text a series within MAX_NASA_SLOTS may need: every count with
# 10 digits (MAX_RATE_PER_S is 1e9) and one separator. Reading stops beyond
# it, so a small archive that expands to gigabytes cannot fill the memory.
MAX_NASA_TEXT_BYTES = MAX_NASA_SLOTS * 11

_BZIP2_MAGIC = b"BZh"
_WHITESPACE = b" \t\n\r\x0b\x0c"
_ALLOWED_BYTES = b"0123456789" + _WHITESPACE
_INVALID_BYTE = re.compile(rb"[^0-9 \t\n\r\x0b\x0c]")
_NEXT_WHITESPACE = re.compile(rb"[ \t\n\r\x0b\x0c]")
_IS_WHITESPACE = np.zeros(256, dtype=bool)
_IS_WHITESPACE[list(_WHITESPACE)] = True
_READ_CHUNK = 1 << 20
# Columns of errors about the whole file or archive rather than one count.
_FILE_COLUMN = "file"
_ARCHIVE_COLUMN = "archive"
# Member names quoted when an archive has no workload.txt.
_SHOWN_MEMBERS = 5
_COUNT_FIX = "Write each count as a whole number >= 0 in decimal digits, separated by spaces."


def read_nasa_http(
    path: str | PathLike[str],
    mean_input_tokens: float = NASA_MEAN_INPUT_TOKENS,
    mean_output_tokens: float = NASA_MEAN_OUTPUT_TOKENS,
) -> RateTrace:
    """Read the NASA HTTP per-second request counts as a ``RateTrace`` of 1-second windows.

    ``path`` is the bzip2 tar ``workload.tbz2``, which is read as a stream
    without extracting it, or the plain ``workload.txt``. The counts are
    separated by any ASCII whitespace and must be whole numbers in
    ``[0, MAX_RATE_PER_S]``. The series carries no token counts, so every
    request gets ``mean_input_tokens`` and ``mean_output_tokens``, by default
    the ServeGen reader's assumption of 1000 prompt and 250 output tokens.
    """
    path = Path(path)
    data = _read_text_bytes(path)
    counts = _parse_counts(path, data)
    return RateTrace(
        name=path.stem,
        source=str(path),
        window_s=NASA_SLOT_S,
        rate_per_s=counts,
        mean_input_tokens=mean_input_tokens,
        mean_output_tokens=mean_output_tokens,
    )


def _read_text_bytes(path: Path) -> bytes:
    """Return the bytes of the count text: the ``workload.txt`` member of a bzip2 tar, or the file itself."""
    with path.open("rb") as handle:
        is_bzip2 = handle.read(len(_BZIP2_MAGIC)) == _BZIP2_MAGIC
        if not is_bzip2:
            handle.seek(0)
            return _read_capped(path, handle, _FILE_COLUMN)

    try:
        # Mode "r|bz2" decompresses the archive as a stream, so only the
        # member's bytes are kept and nothing is written to disk.
        with tarfile.open(path, mode="r|bz2") as archive:
            names = []
            for member in archive:
                if len(names) < _SHOWN_MEMBERS:
                    names.append(member.name)
                if member.isfile() and Path(member.name).name == NASA_MEMBER:
                    member_file = archive.extractfile(member)
                    assert member_file is not None, "extractfile returns a file for every regular member"
                    return _read_capped(path, member_file, _ARCHIVE_COLUMN)
    except (tarfile.TarError, EOFError) as error:
        raise TraceFormatError(
            path, 1, _ARCHIVE_COLUMN, f"the file is not a complete bzip2-compressed tar archive ({error}).",
            f"Check that the file was copied completely, or give the extracted {NASA_MEMBER} instead.",
        ) from None

    found = ", ".join(shown(name) for name in names) or "no members"
    raise TraceFormatError(
        path, 1, _ARCHIVE_COLUMN, f"the archive has no regular file named {NASA_MEMBER} (found {found}).",
        f"Give an archive that contains {NASA_MEMBER}, or the path of the text file itself.",
    )


def _read_capped(path: Path, handle: BinaryIO, column: str) -> bytes:
    """Read ``handle`` to the end, raising ``TraceFormatError`` at ``column`` beyond ``MAX_NASA_TEXT_BYTES``."""
    chunks = []
    size = 0
    while chunk := handle.read(_READ_CHUNK):
        size += len(chunk)
        if size > MAX_NASA_TEXT_BYTES:
            raise TraceFormatError(
                path, 1, column,
                f"the count text is larger than {MAX_NASA_TEXT_BYTES:,} bytes, the most that "
                f"{MAX_NASA_SLOTS:,} counts of up to 10 digits need.",
                "Check that the file is a per-second count series, or split it into shorter files.",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_counts(path: Path, data: bytes) -> np.ndarray:
    """Parse whitespace-separated counts, raising ``TraceFormatError`` at the first invalid one."""
    if data.translate(None, _ALLOWED_BYTES):
        start, end = _token_bounds(data, _INVALID_BYTE.search(data).start())  # type: ignore[union-attr]
        raise _count_error(path, data, start, _describe_invalid(data[start:end]))

    n_counts = _count_tokens(data)
    if n_counts == 0:
        raise TraceFormatError(
            path, 1, "value 1 (second 0)", "the file has no counts.", "Use a series with at least one count."
        )
    if n_counts > MAX_NASA_SLOTS:
        raise _count_error(
            path, data, _token_start(data, MAX_NASA_SLOTS),
            f"the series has {n_counts:,} counts of 1 s, but a trace may span at most "
            f"{MAX_TRACE_SPAN_S / 86400:.0f} days ({MAX_NASA_SLOTS:,} s).",
            "Split the series into shorter files.",
        )

    # Every byte is a digit or whitespace here, so numpy's text parser reads
    # every count. A count above the int64 range comes back as the int64
    # maximum, which the range check below rejects.
    counts = np.fromstring(data, dtype=np.int64, sep=" ")
    if len(counts) != n_counts:
        raise RuntimeError(f"numpy parsed {len(counts)} counts from {path}, but the text has {n_counts}.")
    too_large = np.flatnonzero(counts > MAX_RATE_PER_S)
    if too_large.size:
        start = _token_start(data, int(too_large[0]))
        _, end = _token_bounds(data, start)
        raise _count_error(
            path, data, start,
            f"the count {shown(data[start:end].decode('ascii'))} is above {MAX_RATE_PER_S:g}, the most "
            "requests per second a trace may have.",
            "Check the value: a count this large is a unit or parsing mistake.",
        )
    return counts


def _token_mask(data: bytes) -> np.ndarray:
    """Return a boolean array that is True at every byte of ``data`` that is not ASCII whitespace."""
    return ~_IS_WHITESPACE[np.frombuffer(data, dtype=np.uint8)]


def _count_tokens(data: bytes) -> int:
    """Return the number of whitespace-separated tokens in ``data``."""
    if not data:
        return 0
    in_token = _token_mask(data)
    return int(in_token[0]) + int(np.count_nonzero(in_token[1:] & ~in_token[:-1]))


def _token_start(data: bytes, index: int) -> int:
    """Return the byte offset of the token at 0-based ``index`` in ``data``."""
    in_token = _token_mask(data)
    starts = np.flatnonzero(in_token & ~np.concatenate([[False], in_token[:-1]]))
    return int(starts[index])


def _token_bounds(data: bytes, position: int) -> tuple[int, int]:
    """Return the start and end offsets of the token that contains byte ``position``."""
    start = max(data.rfind(bytes([byte]), 0, position) for byte in _WHITESPACE) + 1
    following = _NEXT_WHITESPACE.search(data, position)
    return start, following.start() if following else len(data)


def _describe_invalid(token: bytes) -> str:
    """Return why ``token``, which contains a byte other than a digit or whitespace, is not a count."""
    text = token.decode("utf-8", errors="replace")
    try:
        number = float(text)
    except ValueError:
        return f"{shown(text)} is not a number."
    if math.isnan(number):
        return f"{shown(text)} is not a number."
    if number < 0:
        return f"{shown(text)} is negative."
    if math.isinf(number) or number != math.floor(number):
        return f"{shown(text)} is not a whole number."
    return f"{shown(text)} is not written in plain decimal digits."


def _count_error(path: Path, data: bytes, start: int, problem: str, fix: str = _COUNT_FIX) -> TraceFormatError:
    """Return a ``TraceFormatError`` for the token at byte ``start``, located by line, value and second."""
    row = data.count(b"\n", 0, start) + 1
    line_start = data.rfind(b"\n", 0, start) + 1
    second = _count_tokens(data[:start])
    value = _count_tokens(data[line_start:start]) + 1
    return TraceFormatError(path, row, f"value {value} (second {second})", problem, fix)
