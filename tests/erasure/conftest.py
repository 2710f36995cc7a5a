"""The serving tests' fixtures (a tiny published bundle, a real server on a loopback port), for the erasure routes."""

from tests.serving.conftest import server, tiny_home  # noqa: F401 - fixtures, used by name
