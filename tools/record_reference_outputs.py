"""Re-record one method's entries of tests/data/reference_outputs.json after its shipped
weights changed on purpose (tests/test_reference_outputs.py pins masks and scores, so refactors
keep results; a new weights file is the one legitimate reason for new values).

Runs ``forgectl localize`` exactly as the test does (PyTorch runtime, two compute threads, in
process) on the method's recorded items and writes their mask sha256 and score, with the
weights' sha256 beside them. Usage::

    .venv/bin/python tools/record_reference_outputs.py --method omni \\
        --casia ../shared/bench/casia1-dev
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "tests" / "data" / "reference_outputs.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--casia", type=Path, default=REPO.parent / "shared" / "bench" / "casia1-dev")
    args = ap.parse_args()

    from forgectl import registry

    data = json.loads(REFERENCE.read_text())
    if args.method not in data["items"]:
        raise SystemExit(f"{args.method}: not in {REFERENCE.name} "
                         f"(has {', '.join(sorted(data['items']))})")
    items = data["items"][args.method]
    env = {**os.environ, "FORGECTL_THREADS": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "forgectl", "localize",
                        *(str(args.casia / rel) for rel in items), "-m", args.method,
                        "--runtime", "torch", "--no-isolate", "--out", tmp],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        for rel in items:
            stem = Path(tmp) / Path(rel).with_suffix("")
            mask = stem.with_name(stem.name + ".mask.png").read_bytes()
            score = json.loads(stem.with_name(stem.name + ".json").read_text())["score"]
            items[rel] = {"mask_sha256": hashlib.sha256(mask).hexdigest(), "score": score}
    # The weights file itself (the default runtime may run an ONNX twin of it).
    sha = registry.load(args.method, runtime="torch").weights_sha256
    data.setdefault("weights_sha256", {})[args.method] = sha
    REFERENCE.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(items, indent=1))


if __name__ == "__main__":
    main()
