"""The shared IXI scans (../shared/data) as the end-to-end tests use them: linked BIDS folders and conf/ixi
pointed at them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.test_end_to_end import PROJECT

IXI = PROJECT.parent / "shared" / "data" / "ixi_t1_2mm_bids"
needs_ixi = pytest.mark.skipif(not IXI.is_dir(), reason="shared IXI data absent (../shared/data)")


def ixi_participants() -> pd.DataFrame:
    return pd.read_csv(IXI / "participants.tsv", sep="\t", dtype={"participant_id": str})


def link_scans(folder: Path, participants: pd.DataFrame) -> None:
    """A BIDS folder of shared IXI subjects, linked, not copied, with ``participants`` as its table."""
    folder.mkdir()
    for subject in participants["participant_id"]:
        (folder / subject).symlink_to(IXI / subject)
    participants.to_csv(folder / "participants.tsv", sep="\t", index=False)


def read_scans_from(conf: Path, bids: Path) -> None:
    """Point conf/ixi's raw scans and participants table at the BIDS folder ``bids``."""
    catalog = yaml.safe_load((conf / "ixi" / "catalog.yml").read_text())
    catalog["raw_images"]["path"] = str(bids)
    catalog["raw_metadata"]["filepath"] = str(bids / "participants.tsv")
    (conf / "ixi" / "catalog.yml").write_text(yaml.safe_dump(catalog))
