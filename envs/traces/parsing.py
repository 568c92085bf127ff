"""Parsing of trace files: CSV rows under a header, timestamps and counts.

Every function takes or reports the file, row and column it reads, so that a
bad value raises a ``TraceFormatError`` that points at its cell.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

from envs.traces.errors import TraceFormatError

_EPOCH = datetime(1970, 1, 1)
_ONE_MICROSECOND = timedelta(microseconds=1)
_TIMESTAMP_FIX = "Write times as YYYY-MM-DD HH:MM:SS with an optional fraction of a second."

# Bounds that tell a corrupt cell from real traffic. A count above
# MAX_TOKENS_PER_REQUEST is far beyond any model's context window and would
# overflow int64 sums. A trace longer than MAX_TRACE_SPAN_S (the longest
# files that conf/trace reads span 14, 23 and 58.6 days) almost always has a
# mistyped date, and binning it would allocate one array entry per tick of the
# whole span.
MAX_TOKENS_PER_REQUEST = 10**9
MAX_TRACE_SPAN_S = 366 * 86400.0
# Maximum length of a cell quoted in an error message.
_SHOWN_CHARS = 40
CSV_SYNTAX_COLUMN = "CSV syntax"


def shown(value: object) -> str:
    """Return ``repr(value)`` cut to a length that fits an error message."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARS:
        return text
    return f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def _fraction_to_microseconds(digits: str) -> int:
    """Round a fraction of a second, given as its decimal digits, to whole microseconds."""
    if len(digits) <= 6:
        return int(digits) * 10 ** (6 - len(digits))
    # Rounding half up to the microsecond depends only on the seventh digit, so
    # longer fractions never reach int(), which rejects more than 4300 digits.
    return int(digits[:6]) + (1 if digits[6] >= "5" else 0)


def parse_timestamp_us(path: Path, row: int, column: str, text: str) -> int:
    """Parse a wall-clock time such as ``2023-11-16 18:17:03.9799600`` to microseconds since 1970.

    The fraction of a second may have any number of digits and is rounded to
    the microsecond. It is parsed here because ``datetime.fromisoformat`` reads
    only the formats that ``isoformat`` writes before Python 3.11, and from 3.11
    on it truncates digits beyond the sixth. Times must carry no time zone and
    are treated as naive, which is enough for offsets within one trace.
    """
    whole, dot, fraction = text.partition(".")
    try:
        moment = datetime.fromisoformat(whole)
    except ValueError:
        raise TraceFormatError(
            path, row, column, f"{shown(text)} is not a timestamp of the form YYYY-MM-DD HH:MM:SS.", _TIMESTAMP_FIX
        ) from None
    if moment.tzinfo is not None:
        raise TraceFormatError(
            path, row, column, f"{shown(text)} has a time zone, which the trace readers do not handle.",
            "Convert the times to one zone and drop the offset.",
        )
    if dot and not (fraction.isascii() and fraction.isdigit()):
        raise TraceFormatError(
            path, row, column, f"{shown(text)} has an invalid fraction of a second {shown(fraction)}.",
            _TIMESTAMP_FIX,
        )

    microseconds = _fraction_to_microseconds(fraction) if dot else 0
    return (moment - _EPOCH) // _ONE_MICROSECOND + microseconds


def parse_nonnegative(path: Path, row: int, column: str, value: object, empty: float | None = None) -> float:
    """Parse a finite number >= 0 from a CSV cell or a JSON value.

    An empty cell returns ``empty`` when it is given and is an error otherwise.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            if empty is not None:
                return empty
            raise TraceFormatError(path, row, column, "the cell is empty.", "Give a number >= 0.")
        try:
            number = float(text)
        except ValueError:
            raise TraceFormatError(
                path, row, column, f"{shown(value)} is not a number.", "Give a number >= 0."
            ) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            # A JSON integer can have any number of digits, and float() fails above about 1.8e308.
            raise TraceFormatError(
                path, row, column, f"the value {shown(value)} is too large for a float.", "Give a finite number."
            ) from None
    else:
        raise TraceFormatError(
            path, row, column, f"{shown(value)} is a {type(value).__name__}, not a number.", "Give a number >= 0."
        )

    if math.isnan(number):
        raise TraceFormatError(path, row, column, "the value is NaN.", "Give a number >= 0.")
    if math.isinf(number):
        raise TraceFormatError(
            path, row, column, f"the value {shown(value)} is infinite or too large for a float.", "Give a finite number."
        )
    if number < 0:
        raise TraceFormatError(path, row, column, f"the value {shown(value)} is negative.", "Give a number >= 0.")
    return number


def parse_count(path: Path, row: int, column: str, value: object, empty: int | None = None) -> int:
    """Parse a whole number in ``[0, MAX_TOKENS_PER_REQUEST]``, such as a token count, from a CSV cell or a JSON value.

    Integral decimals such as ``"63.0"`` are accepted because some published
    traces write counts that way. An empty cell returns ``empty`` when it is
    given and is an error otherwise.
    """
    if isinstance(value, str) and value.isdigit() and value.isascii() and len(value) <= 18:
        number = float(int(value))
    else:
        number = parse_nonnegative(path, row, column, value, None if empty is None else float(empty))
    if number != math.floor(number):
        raise TraceFormatError(
            path, row, column, f"the value {shown(value)} is not a whole number.", "Give a whole number >= 0."
        )
    if number > MAX_TOKENS_PER_REQUEST:
        raise TraceFormatError(
            path, row, column,
            f"the value {shown(value)} is above {MAX_TOKENS_PER_REQUEST:,}, the most a trace request may have.",
            "Check the cell: a count this large is a unit or parsing mistake.",
        )
    return int(number)


def check_span(path: Path, row: int, column: str, offset_s: float) -> None:
    """Raise ``TraceFormatError`` when a row lies more than ``MAX_TRACE_SPAN_S`` after the first row."""
    if offset_s > MAX_TRACE_SPAN_S:
        raise TraceFormatError(
            path, row, column,
            f"the time is {offset_s / 86400:.4g} days after the first row, but a trace may span at most "
            f"{MAX_TRACE_SPAN_S / 86400:.0f} days.",
            "Check the time in this row, which is probably mistyped, or split the trace into shorter files.",
        )


def undecodable_file_error(path: Path, error: UnicodeDecodeError) -> TraceFormatError:
    """Return the error for a file that is not UTF-8, located at the first line that fails to decode."""
    with path.open("rb") as handle:
        for row, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as line_error:
                return TraceFormatError(
                    path, row, f"byte {line_error.start + 1}",
                    f"the line is not valid UTF-8 ({line_error.reason}).", "Save the file as UTF-8.",
                )
    return TraceFormatError(path, 1, f"byte {error.start + 1}", f"the file is not valid UTF-8 ({error.reason}).",
                            "Save the file as UTF-8.")


def csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, list[str], dict[str, int]]]:
    """Yield ``(row number, cells, column index)`` for each data row of a CSV file with a header.

    Blank lines are skipped. The row number is the file's line number, so the
    header is row 1.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            yield from _checked_rows(path, reader, required)
        except UnicodeDecodeError as error:
            raise undecodable_file_error(path, error) from None
        except csv.Error as error:
            # The csv module rejects, for example, a field over csv.field_size_limit() characters.
            raise TraceFormatError(
                path, reader.line_num, CSV_SYNTAX_COLUMN, f"the row is not valid CSV ({error}).",
                "Check the quoting of this row.",
            ) from None


def _checked_rows(
    path: Path, reader: Any, required: Sequence[str]
) -> Iterator[tuple[int, list[str], dict[str, int]]]:
    """Check the header of a ``csv.reader``, then yield its non-blank data rows as ``csv_rows`` does."""
    header = next(reader, None)
    if header is None:
        raise TraceFormatError(
            path, 1, required[0],
            f"the file is empty, but a header with the columns {', '.join(required)} is expected.",
            "Check that the file was copied completely.",
        )
    names = [name.strip() for name in header]
    missing = [name for name in required if name not in names]
    if missing:
        raise TraceFormatError(
            path, 1, missing[0],
            f"the header has no column {missing[0]!r}. The columns found are {names}.",
            f"Use a file with the columns {', '.join(required)}.",
        )
    index = {name: names.index(name) for name in required}
    last_needed = max(index.values())

    has_rows = False
    for cells in reader:
        if not cells or all(not cell.strip() for cell in cells):
            continue
        if len(cells) <= last_needed:
            absent = next(name for name in required if index[name] >= len(cells))
            raise TraceFormatError(
                path, reader.line_num, absent,
                f"the row has {len(cells)} cells, so the column is missing.",
                "Give every row as many cells as the header.",
            )
        has_rows = True
        yield reader.line_num, cells, index

    if not has_rows:
        raise TraceFormatError(
            path, 2, required[0], "the file has a header but no data rows.",
            "Use a trace with at least one request.",
        )


def check_order(path: Path, row: int, column: str, value_us: int, previous_us: int | None) -> None:
    """Raise ``TraceFormatError`` when a row's time is earlier than the time of the row before."""
    if previous_us is not None and value_us < previous_us:
        raise TraceFormatError(
            path, row, column,
            f"the time goes back by {(previous_us - value_us) / 1e6:g} s relative to the row before.",
            f"Sort the rows by {column} before reading the file.",
        )
