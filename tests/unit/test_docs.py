"""Every service setting is documented where users look for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from replication.serving.env import MigrationCredentials
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", "docs/configuration.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    names = [f"REPLIKIT_{name.upper()}" for name in Settings.model_fields]
    names += [f"REPLIKIT_MIGRATION_{name.upper()}" for name in MigrationCredentials.model_fields]
    missing = [name for name in names if name not in text]
    assert not missing, f"{document} lacks {missing}"
