"""Parsing of trace files: CSV rows under a header, timestamps and counts.

Every function takes or reports the file, row and column it reads, so that a
bad value raises a ``TraceFormatError`` that points at its cell.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator, Sequence

from envs.traces.errors import TraceFormatError

_EPOCH = datetime(1970, 1, 1)
_ONE_MICROSECOND = timedelta(microseconds=1)
_TIMESTAMP_FIX = "Write times as YYYY-MM-DD HH:MM:SS with an optional fraction of a second."


def _fraction_to_microseconds(digits: str) -> int:
    """Round a fraction of a second, given as its decimal digits, to whole microseconds."""
    if len(digits) <= 6:
        return int(digits) * 10 ** (6 - len(digits))
    divisor = 10 ** (len(digits) - 6)
    quotient, remainder = divmod(int(digits), divisor)
    return quotient + (1 if 2 * remainder >= divisor else 0)


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
            path, row, column, f"{text!r} is not a timestamp of the form YYYY-MM-DD HH:MM:SS.", _TIMESTAMP_FIX
        ) from None
    if moment.tzinfo is not None:
        raise TraceFormatError(
            path, row, column, f"{text!r} has a time zone, which the trace readers do not handle.",
            "Convert the times to one zone and drop the offset.",
        )
    if dot and not (fraction.isascii() and fraction.isdigit()):
        raise TraceFormatError(
            path, row, column, f"{text!r} has an invalid fraction of a second {fraction!r}.", _TIMESTAMP_FIX
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
            raise TraceFormatError(path, row, column, f"{value!r} is not a number.", "Give a number >= 0.") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise TraceFormatError(
            path, row, column, f"{value!r} is a {type(value).__name__}, not a number.", "Give a number >= 0."
        )

    if math.isnan(number):
        raise TraceFormatError(path, row, column, "the value is NaN.", "Give a number >= 0.")
    if math.isinf(number):
        raise TraceFormatError(path, row, column, f"the value {value!r} is infinite.", "Give a finite number.")
    if number < 0:
        raise TraceFormatError(path, row, column, f"the value {value!r} is negative.", "Give a number >= 0.")
    return number


def parse_count(path: Path, row: int, column: str, value: object, empty: int | None = None) -> int:
    """Parse a whole number >= 0, such as a token count, from a CSV cell or a JSON value.

    Integral decimals such as ``"63.0"`` are accepted because some published
    traces write counts that way. An empty cell returns ``empty`` when it is
    given and is an error otherwise.
    """
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return int(value)
    number = parse_nonnegative(path, row, column, value, None if empty is None else float(empty))
    if number != math.floor(number):
        raise TraceFormatError(
            path, row, column, f"the value {value!r} is not a whole number.", "Give a whole number >= 0."
        )
    return int(number)


def csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, list[str], dict[str, int]]]:
    """Yield ``(row number, cells, column index)`` for each data row of a CSV file with a header.

    Blank lines are skipped. The row number is the file's line number, so the
    header is row 1.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
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
