from __future__ import annotations

import sys
from pathlib import Path

import pytest

from complai.config import Settings, SparkSettings, load_settings, pipl_request_days, spark_env, spark_settings
from complai.errors import InvalidInput, WorkspaceError


def test_round_trip(tmp_path: Path) -> None:
    s = Settings(path=tmp_path, workspace_id="abc", created="2026-01-01T00:00:00Z", ledger_origin="o/1")
    s.write()
    loaded = load_settings(tmp_path)
    assert (loaded.workspace_id, loaded.created, loaded.ledger_origin) == ("abc", "2026-01-01T00:00:00Z", "o/1")
    assert loaded.resolved_database_url().endswith("complai.db")


def test_env_overrides_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Settings(path=tmp_path, workspace_id="abc", created="x").write()
    monkeypatch.setenv("COMPLAI_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings(tmp_path).resolved_database_url() == "postgresql://u@h/db"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[workspace]\nid = 1\n", "id and created are required"),
        ("[workspace]\nid='a'\ncreated='b'\n[surprise]\nx=1\n", "unknown section"),
        ("[workspace]\nid='a'\ncreated='b'\nformat=99\n", "newer complai"),
        ("[workspace]\nid='a'\ncreated='b'\n[keys]\nprovider='hsm'\n", "unsupported key provider"),
    ],
)
def test_corrupt_settings_are_named(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "complai.toml").write_text(content)
    with pytest.raises(WorkspaceError, match=message):
        load_settings(tmp_path)


def test_pipl_request_days_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPLAI_PIPL_REQUEST_DAYS", raising=False)
    assert pipl_request_days() is None
    monkeypatch.setenv("COMPLAI_PIPL_REQUEST_DAYS", "")
    assert pipl_request_days() is None
    monkeypatch.setenv("COMPLAI_PIPL_REQUEST_DAYS", " 30 ")
    assert pipl_request_days() == 30
    monkeypatch.setenv("COMPLAI_PIPL_REQUEST_DAYS", "two weeks")
    with pytest.raises(InvalidInput, match="whole number of days"):
        pipl_request_days()


def test_spark_section_round_trips_and_is_written_only_when_set(tmp_path: Path) -> None:
    plain = Settings(path=tmp_path, workspace_id="abc", created="x")
    assert "[spark" not in plain.to_toml()
    plain.write()
    assert load_settings(tmp_path).spark == SparkSettings(master="local[*]", conf={})
    conf = {"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "64"}
    Settings(
        path=tmp_path, workspace_id="abc", created="x", spark=SparkSettings(master="spark://h:7077", conf=conf)
    ).write()
    text = (tmp_path / "complai.toml").read_text()
    assert '[spark]\nmaster = "spark://h:7077"' in text and '"spark.executor.memory" = "4g"' in text
    assert load_settings(tmp_path).spark == SparkSettings(master="spark://h:7077", conf=conf)


def test_spark_master_from_the_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = {"spark.executor.cores": "2"}
    Settings(path=tmp_path, workspace_id="abc", created="x", spark=SparkSettings("local[2]", conf)).write()
    monkeypatch.delenv("COMPLAI_SPARK_MASTER", raising=False)
    assert spark_settings(load_settings(tmp_path)) == SparkSettings("local[2]", conf)
    monkeypatch.setenv("COMPLAI_SPARK_MASTER", " ")
    assert spark_settings(load_settings(tmp_path)).master == "local[2]"
    monkeypatch.setenv("COMPLAI_SPARK_MASTER", "k8s://https://api.example:6443")
    assert spark_settings(load_settings(tmp_path)) == SparkSettings("k8s://https://api.example:6443", conf)
    monkeypatch.setenv("COMPLAI_SPARK_MASTER", "spark-master:7077")  # no scheme: Spark would refuse it
    with pytest.raises(InvalidInput, match="COMPLAI_SPARK_MASTER must be a Spark master URL"):
        spark_settings(load_settings(tmp_path))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[spark]\nmaster = 7\n", "master must be a Spark master URL"),
        ("[spark]\nmaster = ''\n", "master must be a Spark master URL"),
        ("[spark]\nmaster = 'mesos://h:5050'\n", "master must be a Spark master URL"),
        ("[spark]\nmaster = 'local[2] '\n[spark.conf]\nx = 'y'\nz = 1\n", "conf values must be strings"),
        ("[spark]\nmasters = 'local'\n", "unknown key"),
        ("[spark]\nconf = 'x'\n", "conf must be a table"),
        ("[spark.conf]\n'spark.executor.cores' = 2\n", "conf values must be strings"),
        ("spark = 'local'\n", "must be a table"),
    ],
)
def test_a_bad_spark_section_is_refused(tmp_path: Path, section: str, message: str) -> None:
    (tmp_path / "complai.toml").write_text(f"{section}[workspace]\nid='a'\ncreated='b'\n")
    with pytest.raises(WorkspaceError, match=message):
        load_settings(tmp_path)


def test_spark_env_sets_unset_variables_for_a_local_master_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPARK_LOCAL_IP", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    local = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    assert spark_env("local[*]") == local and spark_env("local") == local and spark_env("local[2,3]") == local
    assert spark_env("spark://h:7077") == {} and spark_env("yarn") == {} and spark_env("localhost") == {}
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.0.0.5")  # set by whoever runs complai: kept
    assert "SPARK_LOCAL_IP" not in spark_env("local[1]")
