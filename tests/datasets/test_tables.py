import pandas as pd

from tlkedro.datasets import DelimitedTableDataset


def test_a_one_column_tsv_reads_as_its_one_column(tmp_path) -> None:
    path = tmp_path / "participants.tsv"
    path.write_text("participant_id\nsub-01\nsub-02\n")
    table = DelimitedTableDataset(filepath=str(path)).load()
    assert list(table.columns) == ["participant_id"]
    assert table["participant_id"].tolist() == ["sub-01", "sub-02"]


def test_a_csv_reads_comma_separated_and_an_explicit_separator_wins(tmp_path) -> None:
    csv = tmp_path / "showcase.csv"
    pd.DataFrame({"eid": [1, 2], "age": [50.5, 61.0]}).to_csv(csv, index=False)
    assert list(DelimitedTableDataset(filepath=str(csv)).load().columns) == ["eid", "age"]
    semicolons = tmp_path / "table.txt"
    semicolons.write_text("eid;age\n1;50.5\n")
    table = DelimitedTableDataset(filepath=str(semicolons), load_args={"sep": ";"}).load()
    assert table.to_dict("list") == {"eid": [1], "age": [50.5]}
