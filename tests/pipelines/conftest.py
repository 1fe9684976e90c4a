"""Fixtures of the pipeline tests: ``bed`` (a controller on a real nats-server, with node
agents added by the tests) is the controller tests' own."""

from controller.conftest import bed  # type: ignore[import-not-found]  # noqa: F401  (the fixture)
