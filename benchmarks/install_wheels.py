"""Does the default install need a compiler? For each platform, whether PyPI has a binary wheel
of every default dependency at its `constraints.txt` pin (README: installs without a compiler).

Evaluates each dependency's environment marker for the platform (jpegio, which PyPI has only
as source, is the optional extra ``forgectl[jpegio]``), then asks ``pip download
--only-binary=:all:`` for it.
Needs network access to the package index. Usage::

    .venv/bin/python benchmarks/install_wheels.py --python 3.11
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
#: platform -> (pip platform tags a current machine of it accepts, its marker values).
PLATFORMS = {
    "linux-x86_64": ([f"manylinux_2_{m}_x86_64" for m in (28, 27, 17)] + ["manylinux2014_x86_64"],
                     {"platform_system": "Linux", "sys_platform": "linux"}),
    "macos-arm64": ([f"macosx_{v}_0_arm64" for v in (15, 14, 13, 12, 11)],
                    {"platform_system": "Darwin", "sys_platform": "darwin"}),
    "windows-x86_64": (["win_amd64"], {"platform_system": "Windows", "sys_platform": "win32"}),
}


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="3.11", help="target Python version (default 3.11)")
    args = ap.parse_args()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    missing = 0
    with tempfile.TemporaryDirectory() as tmp:
        for tag, (tags, env) in PLATFORMS.items():
            marker_env = {"python_version": args.python, "python_full_version": args.python + ".0",
                          "implementation_name": "cpython", "platform_machine": "", **env}
            for spec in project["dependencies"]:
                req = Requirement(spec)
                if req.marker is not None and not req.marker.evaluate(marker_env):
                    print(f"{tag}: {req.name}: not a default dependency here")
                    continue
                name = req.name.lower().replace("_", "-")
                target = f"{name}=={pinned[name]}" if name in pinned else str(req.specifier)
                run = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                     "--only-binary=:all:", *[a for t in tags for a in ("--platform", t)],
                     "--python-version", args.python, "-d", tmp,
                     target if "==" in target else name + target],
                    capture_output=True, text=True)
                ok = run.returncode == 0
                missing += not ok
                print(f"{tag}: {target}: {'wheel' if ok else 'NO WHEEL (needs a compiler)'}")
    print(f"{missing} default dependenc{'y' if missing == 1 else 'ies'} without a wheel")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
