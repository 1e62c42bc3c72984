"""A provider module whose dependency is missing: importing it fails."""

import nbchat_echo_test_dependency_that_is_not_installed  # noqa: F401

from nbchat import Provider


class BrokenProvider(Provider):
    name = "echobroken"
