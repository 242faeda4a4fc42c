"""Fixture modules shared by the test packages."""

pytest_plugins = ["tests.integration.service_fixtures"]
