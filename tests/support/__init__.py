"""Helpers shared by the tests: one module per topic, each with its fixtures.

A module here that defines fixtures is listed in ``tests/conftest.py``'s
``pytest_plugins``; test files import the rest (``from support.dovecot import
DEMO_USERS``).  ``tests/`` is on ``sys.path`` (pytest's rootdir conftest
insertion; ruff knows it through ``src = ["src", "tests"]``).
"""
