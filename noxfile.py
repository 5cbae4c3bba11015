"""Sessions of the mlx-core workspace (run with ``uv run nox``; backend: uv).

Each ``tests(<dist>)`` session installs exactly one member, its declared dependencies and the test groups
from the lock file, so an import the member does not declare fails there.
"""

from __future__ import annotations

import os
import pathlib
import sys

import nox

ROOT = pathlib.Path(__file__).parent
MEMBERS = sorted(p.parent.name for p in (ROOT / "packages").glob("*/pyproject.toml"))
BACKEND_EXTRA = "cpu" if sys.platform == "linux" else None

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["consistency", "tests", "integration", "wheels"]
nox.options.error_on_missing_interpreters = True


def sync(session: nox.Session, *args: str) -> None:
    """``uv sync`` into the session's own virtualenv, from the lock, never touching the dev env."""
    env = {"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}
    session.run_install("uv", "sync", "--locked", "--no-default-groups", *args, env=env, silent=True)


# Optional extras a member's own tests exercise (the umbrella's `mel --png` needs matplotlib).
TEST_EXTRAS = {"mlx-core": ["plot"]}


def member_sync_args(dist: str, *groups: str) -> list[str]:
    args = ["--package", dist]
    for extra in ([BACKEND_EXTRA] if BACKEND_EXTRA else []) + TEST_EXTRAS.get(dist, []):
        args += ["--extra", extra]
    for group in groups:
        args += ["--group", group]
    return args


@nox.session(python=False)
def consistency(session: nox.Session) -> None:
    """Lock file current; sibling ranges admit in-repo versions; namespace kept (no mlx_core/__init__.py)."""
    session.run("uv", "lock", "--check", external=True)
    session.run(sys.executable, str(ROOT / ".ci" / "check_consistency.py"), external=True)


@nox.session
@nox.parametrize("dist", MEMBERS, ids=MEMBERS)
def tests(session: nox.Session, dist: str) -> None:
    """One member's tests with only that member and its declared dependencies installed."""
    sync(session, *member_sync_args(dist, "test", "parity"))
    session.run("uv", "pip", "list", "--python", session.virtualenv.location, external=True)
    session.run("python", "-m", "pytest", f"packages/{dist}/tests", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """All members together: the cross-package tests under ``tests/``."""
    sync(session, *member_sync_args("mlx-core", "test", "parity"))
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session
def wheels(session: nox.Session) -> None:
    """Build every wheel; install one member from wheels alone and import it through the namespace."""
    dist_dir = pathlib.Path(session.create_tmp()) / "dist"
    session.run(
        "uv", "build", "--all-packages", "--no-sources", "--wheel", "-o", str(dist_dir), external=True
    )
    session.run(sys.executable, str(ROOT / ".ci" / "check_wheels.py"), str(dist_dir), external=True)
    # Install the spec wheel with exactly the sibling wheels it declares (by path, never from an index).
    own = [
        str(next(dist_dir.glob(f"{name}-*.whl")))
        for name in ("mlx_core_spec", "mlx_core_generate", "mlx_core_cache")
    ]
    backend = ["mlx[cpu]>=0.32"] if BACKEND_EXTRA else []
    session.install(*own, *backend)
    session.run(
        "python",
        "-c",
        "import mlx_core.spec, mlx_core.generate, mlx_core.cache, importlib.util as u;"
        "assert u.find_spec('mlx_core.audio') is None, 'audio must not come with spec';"
        "import mlx_core; assert getattr(mlx_core, '__file__', None) is None, 'mlx_core is not a namespace'",
    )
    # Then the umbrella with every sibling wheel: the shipped demo model is package data and generates.
    session.install(*[str(w) for w in sorted(dist_dir.glob("mlx_core*.whl"))], *backend)
    session.run("mlx-core", "generate", "--prompt", "The built-in function", "--max-tokens", "8")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy over every member."""
    sync(session, *member_sync_args("mlx-core", "dev"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    srcs = [str(p) for p in sorted((ROOT / "packages").glob("*/src"))]
    session.run("mypy", *srcs, env={"MYPYPATH": os.pathsep.join(srcs)})
