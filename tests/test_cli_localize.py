"""`forgectl localize` end to end: outputs, JSON schema, batches with bad files, gates."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forgectl.intake import encode_jpeg
from forgectl.outputs import SCHEMA_VERSION, atomic_write
from tests.helpers import jpeg_folder

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, FORGECTL_DEBUG="")
    return subprocess.run(
        [sys.executable, "-m", "forgectl", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=300,
    )


@pytest.fixture
def good_jpeg(tmp_path, make_image) -> Path:
    p = tmp_path / "in" / "photo.jpg"
    p.parent.mkdir()
    p.write_bytes(encode_jpeg(make_image(120, 160), 85))
    return p


def test_single_image_writes_four_outputs_with_schema(good_jpeg, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("localize", str(good_jpeg), "--method", "ela", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for suffix in (".mask.png", ".heatmap.png", ".overlay.png", ".json"):
        assert (out / f"photo{suffix}").is_file()
    mask = np.asarray(Image.open(out / "photo.mask.png"))
    assert mask.shape == (120, 160) and set(np.unique(mask)) <= {0, 255}
    rec = json.loads((out / "photo.json").read_text())
    assert rec["schema"] == SCHEMA_VERSION
    assert rec["input"]["sha256"] == hashlib.sha256(good_jpeg.read_bytes()).hexdigest()
    assert rec["input"]["format"] == "JPEG" and rec["input"]["width"] == 160
    assert rec["method"]["name"] == "ela" and rec["method"]["threshold"] == 0.5
    assert 0.0 <= rec["score"] <= 1.0
    assert rec["tampered_fraction"] == pytest.approx((mask > 0).mean(), abs=1e-6)
    assert {"decode_s", "analyze_s"} <= set(rec["timings"])
    assert rec["forgectl_version"]
    assert not (out / "results.jsonl").exists()  # a single image is not a batch
    assert not list(out.glob(".*.tmp"))
    # The summary answers "is my photo edited?" without opening the JSON.
    summary = proc.stderr.strip().splitlines()[-1]
    assert (f", score {rec['score']:.2f}, {100 * rec['tampered_fraction']:.1f}% of pixels "
            "flagged; outputs in") in summary


def test_batch_goes_past_bad_files_and_exits_1(tmp_path, make_image):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = encode_jpeg(make_image(96, 96, seed=1), 90)
    (folder / "a.jpg").write_bytes(good)
    Image.fromarray(make_image(64, 80, seed=2)).save(folder / "b.png")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (folder / "x.jpg").write_text("this is text, not a JPEG\n")
    (folder / "notes.txt").write_text("ignored: not an image extension\n")
    out = tmp_path / "out"
    proc = run_cli("localize", str(folder), "--out", str(out))
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 3
    assert all(len(line) < 300 for line in errors)
    assert "Traceback" not in proc.stderr
    assert (out / "a.json").is_file() and (out / "b.json").is_file()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    assert sum("error" in r for r in rows) == 3
    high = sum(r.get("applicable", False) and r.get("score", 0) >= 0.5 for r in rows)
    assert "2 image(s) analysed with auto" in proc.stderr.splitlines()[-1]
    assert f", 3 failed, {high} scored 0.5 or more; outputs in" in proc.stderr.splitlines()[-1]


def test_same_stem_in_different_folders_does_not_collide(tmp_path, make_image):
    for sub in ("one", "two"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        (tmp_path / "in" / sub / "img.jpg").write_bytes(encode_jpeg(make_image(64, 64), 80))
    out = tmp_path / "out"
    proc = run_cli("localize", str(tmp_path / "in"), "-r", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "one" / "img.json").is_file() and (out / "two" / "img.json").is_file()


def test_fail_on_gate_and_json_stdout(good_jpeg, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("localize", str(good_jpeg), "-m", "ela", "--out", str(out), "--json",
                   "--fail-on", "0.0")
    assert proc.returncode == 3
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["method"]["name"] == "ela"
    proc = run_cli("localize", str(good_jpeg), "-m", "ela", "--out", str(out), "--fail-on", "1.0")
    assert proc.returncode in (0, 3)


def test_unknown_method_and_missing_path_are_one_line_errors(good_jpeg, tmp_path):
    proc = run_cli("localize", str(good_jpeg), "--method", "nope", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown method" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("localize", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run_cli("localize", str(good_jpeg), "-p", "runtime=onnx", "--out", str(tmp_path))
    assert proc.returncode == 2 and "use --runtime" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inputs_never_modified(good_jpeg, tmp_path):
    before = good_jpeg.read_bytes()
    run_cli("localize", str(good_jpeg.parent), "--out", str(good_jpeg.parent))
    assert good_jpeg.read_bytes() == before


def test_glob_pattern(tmp_path, make_image):
    for i in range(3):
        (tmp_path / f"g{i}.jpg").write_bytes(encode_jpeg(make_image(48, 48, seed=i), 80))
    out = tmp_path / "out"
    proc = run_cli("localize", str(tmp_path / "g*.jpg"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("*.json"))) == 3


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, "w") as fh:
            fh.write("{partial")
            raise KeyboardInterrupt
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_help_does_not_import_torch():
    code = "import sys, forgectl.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False"


def test_methods_lists_registry():
    proc = run_cli("methods", "--json")
    assert proc.returncode == 0
    names = [row["name"] for row in json.loads(proc.stdout)]
    assert "ela" in names


def test_resume_keeps_a_finished_image_and_ends_with_the_same_exit_code(good_jpeg, tmp_path,
                                                                        cli):
    out = tmp_path / "out"
    first = cli(["localize", good_jpeg, "-m", "ela", "--out", out, "--fail-on", "0.0"])
    assert first.exit_code == 3, first.output
    record = (out / "photo.json").read_bytes()
    again = cli(["localize", good_jpeg, "-m", "ela", "--out", out, "--fail-on", "0.0", "--resume"])
    assert again.exit_code == 3 and "1 finished earlier, kept" in again.stderr
    assert (out / "photo.json").read_bytes() == record  # not analysed again
    other = cli(["localize", good_jpeg, "-m", "ela", "--out", out, "--resume",
                 "--threshold", "0.4"])
    assert other.exit_code == 0 and "kept" not in other.stderr  # other settings: redone
    assert json.loads((out / "photo.json").read_text())["method"]["threshold"] == 0.4


def test_help_names_the_reliability_options(cli):
    text = cli(["localize", "--help"]).stdout
    for option in ("--resume", "--timeout", "--max-memory", "--no-isolate"):
        assert option in text


@pytest.mark.parametrize("command", ["localize", "explain", "restore", "benchmark", "export",
                                     "train", "synth"])
def test_help_shows_what_a_text_option_takes_not_its_python_type(cli, command):
    # Typer labels an option without a metavar by its annotation ("<str>", "<list[str]>"),
    # which tells a user nothing; the choices or the form (auto|on|off, KEY=VALUE) do.
    options = [line for line in cli([command, "--help"]).stdout.splitlines()
               if line.lstrip().startswith("-")]
    assert options
    vague = [line.strip() for line in options if "<str>" in line or "<list[" in line]
    assert not vague, vague


def test_methods_listing_is_plain_text_within_the_terminal():
    from forgectl import registry

    narrow = subprocess.run([sys.executable, "-m", "forgectl", "methods"], capture_output=True,
                            text=True, cwd=REPO, timeout=120,
                            env=dict(os.environ, COLUMNS="80", TERM="dumb"))
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert not set("┃│━─┏┗") & set(narrow.stdout)  # no box drawing in a pipe
    for name in registry.methods():  # each block starts with the method's name (grep-able)
        assert any(line.split()[:1] == [name] for line in lines), name
    # a file name is never split across lines
    assert "omni-tiny.safetensors" in narrow.stdout


def test_help_text_flows_as_one_paragraph_per_docstring_paragraph():
    wide = subprocess.run([sys.executable, "-m", "forgectl", "localize", "--help"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=dict(os.environ, COLUMNS="300", TERM="dumb"))
    # Wrapped to the (wide) terminal, not cut where the docstring's own lines end: every line
    # of the paragraph but its last is filled.
    lines = wide.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("A batch goes on"))
    paragraph = lines[start:lines.index("", start)]
    assert len(paragraph) >= 2 and all(len(line) >= 120 for line in paragraph[:-1]), paragraph


def test_files_from_reads_a_list_and_goes_on_past_a_missing_entry(tmp_path):
    folder = jpeg_folder(tmp_path / "in", ["a.jpg", "b c.jpg"])
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'a.jpg'}\r\n\n{folder / 'missing.jpg'}\n{folder / 'b c.jpg'}\n")
    out = tmp_path / "out"
    result = run_cli("localize", "--files-from", str(listing), "-m", "ela", "--out", str(out),
                     "--no-isolate")
    assert result.returncode == 1, result.stderr  # the missing entry failed, the rest ran
    assert "missing.jpg: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr
    logged = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(Path(r["input"]["path"]).name for r in logged if "error" not in r) == [
        "a.jpg", "b c.jpg"]
    assert (out / "b c.mask.png").is_file()


def test_files_from_standard_input_splits_on_nul_bytes(tmp_path, make_image):
    path = tmp_path / "odd\nname.jpg"  # a newline in a name: only NUL separation keeps it whole
    path.write_bytes(encode_jpeg(make_image(64, 80), 85))
    out = tmp_path / "out"
    env = dict(os.environ, FORGECTL_DEBUG="")
    result = subprocess.run(
        [sys.executable, "-m", "forgectl", "localize", "--files-from", "-", "-m", "ela",
         "--out", str(out), "--no-isolate"],
        input=os.fsencode(path) + b"\0", capture_output=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out / "odd\nname.mask.png").is_file()
    assert (out / "results.jsonl").is_file()  # a list is a batch, even of one image


def test_no_inputs_and_an_unreadable_list_are_one_line_errors(tmp_path):
    bare = run_cli("localize", "-m", "ela", "--out", str(tmp_path / "o"))
    assert bare.returncode == 2 and "--files-from" in bare.stderr
    missing = run_cli("localize", "--files-from", str(tmp_path / "nope.txt"), "-m", "ela",
                      "--out", str(tmp_path / "o"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().count("\n") == 0 and "nope.txt" in missing.stderr
    assert not (tmp_path / "o").exists()  # nothing written


def test_an_image_on_standard_input_is_kept_beside_its_outputs(tmp_path, make_image):
    data = encode_jpeg(make_image(64, 80), 85)
    out = tmp_path / "out"
    env = dict(os.environ, FORGECTL_DEBUG="")
    command = [sys.executable, "-m", "forgectl", "localize", "-", "-m", "ela", "--out",
               str(out), "--no-isolate", "--json"]
    result = subprocess.run(command, input=data, capture_output=True, cwd=REPO, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    kept = out / "stdin.jpg"  # the format from the bytes, not a name
    assert kept.read_bytes() == data
    assert record["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert Path(record["input"]["path"]).resolve() == kept.resolve()
    assert (out / "stdin.mask.png").is_file() and not (out / "results.jsonl").exists()
    for junk, message in ((b"", "empty"), (b"%PDF-1.4 not an image", "not a JPEG")):
        bad = subprocess.run(command[:-4] + ["--out", str(tmp_path / "bad")], input=junk,
                             capture_output=True, cwd=REPO, env=env, timeout=300)
        assert bad.returncode == 1 and message in bad.stderr.decode()
        assert b"Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
    both = subprocess.run(command[:4] + ["-", "--files-from", "-"], input=data,
                          capture_output=True, cwd=REPO, env=env, timeout=300)
    assert both.returncode == 2 and b"standard input" in both.stderr


def test_outputs_writes_only_the_chosen_pngs_and_resume_respects_the_choice(tmp_path):
    folder = jpeg_folder(tmp_path / "in", ["a.jpg", "b.jpg"])
    out = tmp_path / "out"

    def run(*extra: str) -> subprocess.CompletedProcess:
        return run_cli("localize", str(folder), "-m", "ela", "--out", str(out), "-j", "1",
                       *extra)

    def pngs() -> list[str]:
        return sorted(p.name for p in out.glob("a.*.png"))

    assert run().returncode == 0
    assert pngs() == ["a.heatmap.png", "a.mask.png", "a.overlay.png"]
    assert run("--outputs", "mask", "--resume").returncode == 0  # another choice: redone
    assert pngs() == ["a.mask.png"]  # the earlier heatmap and overlay are gone with it
    record = json.loads((out / "a.json").read_text())
    assert set(record["outputs"]) == {"mask"} and set(record["output_sha256"]) == {"mask"}
    again = run("--outputs", "mask", "--resume")
    assert again.returncode == 0 and "2 finished earlier, kept" in again.stderr
    assert run("--outputs", "json").returncode == 0 and pngs() == []
    logged = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [set(r["outputs"]) for r in logged] == [{"json"}, {"json"}]
    bad = run("--outputs", "mask,masks")
    assert bad.returncode == 2 and "--outputs: masks is not an output" in bad.stderr
