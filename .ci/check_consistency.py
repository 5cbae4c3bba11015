"""Workspace promises that uv does not check (run by ``nox -s consistency``).

- every sibling dependency is a version range that admits the sibling's in-repo version;
- no member ships ``mlx_core/__init__.py`` (``mlx_core`` is a PEP 420 namespace);
- each member's wheel includes only its own subpackage(s), and has README, CHANGELOG, tests and py.typed;
- every ``mlx_core.<pkg>`` a member's sources import is itself or a declared sibling.
"""

from __future__ import annotations

import pathlib
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from packaging.requirements import Requirement
from packaging.version import Version

DEFAULT_ROOT = pathlib.Path(__file__).resolve().parents[1]
IMPORT_RE = re.compile(r"^\s*(?:from|import)\s+mlx_core\.(\w+)", re.MULTILINE)


def main(root: pathlib.Path = DEFAULT_ROOT) -> int:
    """Print each broken promise; return 1 if any."""
    members = {}
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text())
        members[data["project"]["name"]] = (pyproject.parent, data)
    # Which subpackages each distribution ships, from its wheel config.
    ships: dict[str, set[str]] = {}
    for name, (_, data) in members.items():
        includes = data["tool"]["hatch"]["build"]["targets"]["wheel"]["only-include"]
        ships[name] = {inc.rsplit("/", 1)[-1] for inc in includes}

    errors: list[str] = []
    for name, (path, data) in members.items():
        for raw in data["project"].get("dependencies", []):
            req = Requirement(raw)
            if req.name not in members:
                continue
            sibling_version = Version(members[req.name][1]["project"]["version"])
            if not str(req.specifier):
                errors.append(f"{name}: sibling dependency {req.name!r} has no version range")
            elif sibling_version not in req.specifier:
                errors.append(
                    f"{name}: requires {req.name}{req.specifier}, "
                    f"which excludes the in-repo {sibling_version}"
                )
        stray = path / "src" / "mlx_core" / "__init__.py"
        if stray.exists():
            errors.append(f"{stray.relative_to(root)} exists: mlx_core must stay a namespace package")
        for required in ("README.md", "CHANGELOG.md", "tests"):
            if not (path / required).exists():
                errors.append(f"{name}: missing {required}")
        for sub in ships[name]:
            pkg_dir = path / "src" / "mlx_core" / sub
            if not (pkg_dir / "py.typed").exists():
                errors.append(f"{name}: {pkg_dir.relative_to(root)} has no py.typed")
        declared = {Requirement(r).name for r in data["project"].get("dependencies", [])}
        allowed = set(ships[name]) | {s for dep in declared if dep in ships for s in ships[dep]}
        for source in (path / "src").rglob("*.py"):
            for imported in IMPORT_RE.findall(source.read_text()):
                if imported not in allowed:
                    errors.append(
                        f"{source.relative_to(root)} imports mlx_core.{imported}, "
                        f"which {name} does not declare as a dependency"
                    )
    for error in errors:
        print(f"consistency: {error}", file=sys.stderr)
    if not errors:
        print(f"consistency: {len(members)} members ok")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROOT))
