"""Regenerate docs/dashboard.png (one command: ``python scripts/render_dashboard.py``).

The screenshot comes from the browser test itself (tests/integration/test_dashboard_browser.py):
a real server and sidecar, reference traffic, then one shifted feature until the sidecar alerts,
rendered by headless Chromium. The test keeps its screenshot where ``DASHBOARD_SCREENSHOT`` says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/integration/test_dashboard_browser.py"


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png"
    env = {**os.environ, "DASHBOARD_SCREENSHOT": str(out.resolve())}
    argv = [sys.executable, "-m", "pytest", TEST, "-q", "-rs", "-p", "no:cacheprovider"]
    code = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode
    if code == 0 and out.is_file():
        print(f"wrote {out}")
        return 0
    print(f"{out} not written (see the test output above)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
