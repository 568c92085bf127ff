"""Error raised when a trace file does not have the expected format."""

from __future__ import annotations

from os import PathLike


class TraceFormatError(ValueError):
    """Invalid content in a trace file, located by file, row and column.

    ``row`` is 1-based and counts lines of the file, so in a CSV file with a
    header the header is row 1 and the first request is row 2. ``column`` is
    the column name from the header, or a descriptive name such as
    ``"column 2 (mean rate)"`` for files without a header.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        row: int,
        column: str,
        problem: str,
        fix: str,
    ) -> None:
        self.path = str(path)
        self.row = row
        self.column = column
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}, row {row}, column {column}: {problem} {fix}")
