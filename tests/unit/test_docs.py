"""Every service setting is documented where users look for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", "docs/configuration.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [
        f"REPLIKIT_{name.upper()}"
        for name in Settings.model_fields
        if f"REPLIKIT_{name.upper()}" not in text
    ]
    assert not missing, f"{document} lacks {missing}"
