"""Shared test helpers: a natural test image, the CLI in-process and as a subprocess, and a
random-weights writer that makes a weights file + model card the way the trainer does."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgectl.synth.scenes import natural_image  # noqa: F401 (re-exported for tests)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FORGECTL_SHARED", REPO.parent / "shared"))


@dataclass
class CliResult:
    """What a command did: exit code, stdout, stderr, and both together (``output``)."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(args: list[Any]) -> CliResult:
    """``forgectl ARGS`` in this process, through the console entry point (so known errors
    become one line and their exit code, as for a user)."""
    from forgectl.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    saved = sys.argv
    sys.argv = ["forgectl", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m forgectl ARGS`` in a subprocess (real exit codes, stderr, signals)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "forgectl", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, env=full_env,
                          timeout=timeout)


def write_random_weights(model: Any, path: Path, method: str, config: dict[str, Any],
                         config_name: str = "tiny") -> Path:
    """Save ``model``'s (random) state as ``path`` (safetensors) with a model card holding
    ``config`` and the file's sha256, as a trained, shipped file has."""
    from forgectl.weights import sha256_file, write_tensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tensors(path, {k: v.detach().contiguous().clone()
                         for k, v in model.state_dict().items()})
    card = {"format": "forgectl.model_card/1", "method": method, "config_name": config_name,
            "config": config, "weights": {"file": path.name, "sha256": sha256_file(path)}}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


#: A ``sitecustomize`` that makes ``import torch`` fail as on an install without the train
#: extra (a finder that refuses it; ``sys.modules["torch"] = None`` would instead break
#: libraries such as scipy that look for torch arrays in ``sys.modules``).
_BLOCKER = """import sys

BLOCKED = {blocked!r}


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
        return None


for _name in BLOCKED:
    sys.modules.pop(_name, None)
sys.meta_path.insert(0, _Blocker())
"""
#: The POSIX-only modules of the standard library (absent on Windows).
POSIX_ONLY = ("resource", "fcntl", "termios", "pwd", "grp")


def run_without_torch(
    args: list[Any], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600,
    also: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """``forgectl ARGS`` in a fresh interpreter where ``import torch`` fails, as on the default
    (torch-free) install, and so does importing any module in ``also`` (e.g.
    :data:`POSIX_ONLY`, as on Windows); returns the completed process (text stdout/stderr)."""
    poison = Path(cwd) / "no-torch"
    poison.mkdir(parents=True, exist_ok=True)
    (poison / "sitecustomize.py").write_text(_BLOCKER.format(blocked=("torch", *also)))
    env = {**os.environ, **(env or {}), "PYTHONPATH": f"{poison}{os.pathsep}{REPO}"}
    code = "import sys; from forgectl.cli import main; sys.argv[0] = 'forgectl'; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def weights_with_damaged_twin(folder: Path, twin: str = "omni-tiny.onnx") -> Path:
    """``folder``: the shipped weights as links, but ``twin`` a copy with one bit flipped (a
    damage onnxruntime itself would load and run); point ``FORGECTL_WEIGHTS_DIR`` at it."""
    shipped = REPO / "weights"
    folder.mkdir(parents=True)
    for path in shipped.iterdir():
        if path.name != twin:
            (folder / path.name).symlink_to(path)
    data = bytearray((shipped / twin).read_bytes())
    data[len(data) // 2] ^= 0x10
    (folder / twin).write_bytes(bytes(data))
    return folder


def jpeg_folder(folder: Path, names: list[str], size: tuple[int, int] = (64, 80)) -> Path:
    """``folder`` with a small natural JPEG (q85) under each of ``names``."""
    from forgectl.intake import encode_jpeg

    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(encode_jpeg(natural_image(*size), 85))
    return folder
