from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.routing.lsn import format_lsn, parse_lsn


def test_parse_lsn_reads_both_halves() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_format_and_parse_round_trip(position: int) -> None:
    assert parse_lsn(format_lsn(position)) == position


@pytest.mark.parametrize("text", ["", "0", "/1", "1/", "x/1", "1/2/3"])
def test_parse_lsn_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match=r"WAL position|invalid literal"):
        parse_lsn(text)
