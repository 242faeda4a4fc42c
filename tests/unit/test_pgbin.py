from __future__ import annotations

import stat
from pathlib import Path

import pytest

from replication.errors import BinariesNotFoundError
from replication.pgbin import REQUIRED_PROGRAMS, find_pg_binaries


def fake_bin_dir(root: Path, version: str, skip: str | None = None) -> Path:
    directory = root / "bin"
    directory.mkdir()
    for name in REQUIRED_PROGRAMS:
        if name == skip:
            continue
        program = directory / name
        program.write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return directory


def test_explicit_directory_is_used_and_its_version_read(tmp_path: Path) -> None:
    found = find_pg_binaries(fake_bin_dir(tmp_path, "17.2"))
    assert found.major_version == 17
    assert found.program("initdb") == str(tmp_path / "bin" / "initdb")


def test_incomplete_explicit_directory_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(BinariesNotFoundError, match=r"pg_basebackup.*apt-get install postgresql"):
        find_pg_binaries(fake_bin_dir(tmp_path, "16.1", skip="pg_basebackup"))


def test_pg_bin_environment_variable_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_BIN", str(fake_bin_dir(tmp_path, "16.4")))
    assert find_pg_binaries().major_version == 16
