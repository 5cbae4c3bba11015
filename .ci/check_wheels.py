"""Each built wheel holds only its own ``mlx_core`` subpackage(s) and never ``mlx_core/__init__.py``."""

from __future__ import annotations

import pathlib
import sys
import zipfile

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(dist_dir: str) -> int:
    expected: dict[str, set[str]] = {}
    for pyproject in (ROOT / "packages").glob("*/pyproject.toml"):
        data = tomllib.loads(pyproject.read_text())
        includes = data["tool"]["hatch"]["build"]["targets"]["wheel"]["only-include"]
        expected[data["project"]["name"].replace("-", "_")] = {i.rsplit("/", 1)[-1] for i in includes}
    wheels = sorted(pathlib.Path(dist_dir).glob("*.whl"))
    errors = []
    seen = set()
    for wheel in wheels:
        dist = wheel.name.split("-")[0]
        seen.add(dist)
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if ".dist-info/" in member:
                    continue
                parts = member.split("/")
                if parts[0] != "mlx_core" or len(parts) < 3 or parts[1] not in expected.get(dist, set()):
                    errors.append(f"{wheel.name}: unexpected file {member}")
    missing = set(expected) - seen
    errors += [f"no wheel built for {m}" for m in sorted(missing)]
    for e in errors:
        print(f"wheels: {e}", file=sys.stderr)
    if not errors:
        print(f"wheels: {len(wheels)} wheels, each holds only its own subpackage")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
