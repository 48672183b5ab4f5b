"""Finding the system tools some tests need: promtool and headless Chromium.

``scripts/install-system-packages.sh`` (run by ``make test``) installs them where it can; where a
tool is still missing, the tests that need it are skipped with a reason saying how to get it.
"""

from __future__ import annotations

import shutil

import pytest

INSTALL_HINT = "run scripts/install-system-packages.sh as root (apt-get install prometheus chromium)"


def require_tool(*names: str, package: str) -> str:
    """The path of the first of ``names`` on PATH; skips the test (naming the package) if none is."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip(f"{' / '.join(names)} not found (Debian package {package}); {INSTALL_HINT}")


def promtool() -> str:
    """promtool, from Debian's ``prometheus`` package."""
    return require_tool("promtool", package="prometheus")


def chromium() -> str:
    """A Chromium that can run headless."""
    return require_tool("chromium", "chromium-browser", "google-chrome", package="chromium")
