"""Shared pytest configuration: plugins every test directory can use."""

from __future__ import annotations

pytest_plugins = ["tests.azurite", "tests.containers", "tests.prices", "tests.waits", "tests.webserver"]
