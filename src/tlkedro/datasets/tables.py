"""``DelimitedTableDataset``: a metadata table given as CSV or as TSV, told apart by its suffix."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from tlkedro.datasets.atomic import CSVDataset

TAB_SUFFIXES = (".tsv", ".tab")


class DelimitedTableDataset(CSVDataset):
    """``CSVDataset`` reading tab-separated files (``.tsv``, ``.tab``) with tabs and others with commas.

    pandas' separator sniffing (``sep: null``) is not used because it misreads a one-column table, the
    minimal BIDS ``participants.tsv`` (the sniffer picks a letter of the header as the separator). An
    explicit ``load_args.sep`` still wins.
    """

    def __init__(self, *, filepath: str, load_args: dict[str, Any] | None = None, **kwargs: Any):
        suffix = PurePosixPath(filepath).suffix.lower()
        separator = "\t" if suffix in TAB_SUFFIXES else ","
        super().__init__(filepath=filepath, load_args={"sep": separator, **(load_args or {})}, **kwargs)
