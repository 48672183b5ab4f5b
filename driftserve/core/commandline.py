"""What every driftserve subcommand does the same way: settings from flags, logging, child argv.

Flags given on the command line override ``DRIFTSERVE_*`` environment variables, which override
defaults; a flag is the settings field's name with dashes (``--grace-period-s`` is
``grace_period_s``), so one function turns settings back into the flags that reproduce them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TypeVar

from pydantic import BaseModel

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

SettingsT = TypeVar("SettingsT", bound=BaseModel)


def settings_from_args(settings_class: type[SettingsT], args: argparse.Namespace) -> SettingsT:
    """Build ``settings_class`` from the flags that were given; the environment fills the rest."""
    names = settings_class.model_fields
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return settings_class(**given)


def settings_argv(settings: BaseModel, fields: tuple[str, ...], **overrides: object) -> list[str]:
    """``--field-name value`` for each of ``fields`` (``overrides`` win); None values are left out."""
    argv: list[str] = []
    for name in fields:
        value = overrides[name] if name in overrides else getattr(settings, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def driftserve_command(*args: str) -> list[str]:
    """The argv that runs ``driftserve ARGS`` with this interpreter's installed driftserve.

    ``-P``: the child's working directory is not put on ``sys.path``, so a ``driftserve`` folder
    there (a source checkout) never shadows the installed package.
    """
    return [sys.executable, "-P", "-m", "driftserve", *args]


def configure_logging(level: str | int) -> None:
    """One log format for every process driftserve starts."""
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=LOG_FORMAT)
