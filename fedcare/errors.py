"""Errors shared by every fedcare role, and the exit codes the CLI maps them to.

Every message states what failed, the value seen and what to do, on one line: a hospital IT
person reading a daemon log should not need a stack trace to fix a config file.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (README, "Exit codes")."""

    OK = 0
    FAILURE = 1
    CONFIG = 2
    DATA = 3
    PRIVACY = 4
    NO_TRAINING = 5  # a run finished, but no site trained in any round
    GATE = 6  # the release gate refused a version (every failed criterion is listed)


class FedcareError(Exception):
    """Base of every error fedcare raises on purpose; carries its exit code."""

    exit_code: ExitCode = ExitCode.FAILURE


class ConfigError(FedcareError):
    """A configuration file, CLI option or run-config value is invalid."""

    exit_code = ExitCode.CONFIG


class DataError(FedcareError):
    """A site's data file is missing, malformed or fails the task's schema."""

    exit_code = ExitCode.DATA
