"""Fixture modules shared by the test packages, and the run's scratch-directory cleanup."""

from collections.abc import Iterator

import pytest

from tests.integration.clusters import remove_temp_dirs

pytest_plugins = ["tests.integration.service_fixtures"]

DOCKER_GROUP = "docker"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (xdist/remote.py)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for ``make test``'s ``pytest -n 2 --dist loadgroup``: one group per file, so a
    module's cluster is made once, on one worker; and one group for every test that runs the
    Docker engine, so two compose stacks (and two image builds) never run at once."""
    for item in items:
        group = DOCKER_GROUP if item.get_closest_marker("compose") else str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def scratch_dirs_removed() -> Iterator[None]:
    """Remove every directory made by ``reachable_temp_dir`` once the run is over (clusters
    in them are stopped by their own fixtures first: this fixture is set up before them)."""
    yield
    remove_temp_dirs()
