"""Fixture modules shared by the test packages, and the run's scratch-directory cleanup."""

from collections.abc import Iterator

import pytest

from tests.integration.clusters import remove_temp_dirs

pytest_plugins = ["tests.integration.service_fixtures"]


@pytest.fixture(scope="session", autouse=True)
def scratch_dirs_removed() -> Iterator[None]:
    """Remove every directory made by ``reachable_temp_dir`` once the run is over (clusters
    in them are stopped by their own fixtures first: this fixture is set up before them)."""
    yield
    remove_temp_dirs()
