"""The ``--restore auto|on|off`` pre-stage of localize / explain / benchmark (issue 21,
docs/RESTORE.md): the per-method policy, byte-identical outputs where it does not fire, the
record, ``--resume`` settings, worker pickling and the benchmark runner.

Small synthetic images and the shipped restoration weights (classifier on a 96 x 128 image:
a fraction of a second); the one test on real photos skips without ../shared.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from forgectl import pipeline, registry
from forgectl.analysis.disturbance import brightness, contrast
from forgectl.backends.base import Backend, MethodSpec, Result
from forgectl.evaluation.datasets import Item
from forgectl.evaluation.runner import analyze_item
from forgectl.intake import encode_jpeg, image_from_array, image_from_bytes, load_image
from forgectl.outputs import png_bytes
from forgectl.restore import (
    DEFAULT_RESTORE_MODE,
    ORIGINAL,
    OWN,
    RESTORE_MODES,
    RESTORED,
    RestoreStage,
    RestoringBackend,
    method_policy,
    restored_image,
    run_with_stage,
)
from forgectl.synth.scenes import natural_image

IMAGE_SUFFIXES = (".mask.png", ".heatmap.png", ".overlay.png")


def clean_rgb(seed: int) -> np.ndarray:
    """A photo-like image over the whole 0..255 range, saved as a JPEG (as photos are) and
    decoded: the stage must decline on it. (Stretching alone is a gain above 1, and on a
    lossless file its histogram fingerprint rightly makes the stage fire.)"""
    rgb = natural_image(96, 128, seed).astype(np.float64)
    stretched = np.clip(np.round(rgb * 255 / rgb.max()), 0, 255).astype(np.uint8)
    return image_from_bytes(encode_jpeg(stretched, 90)).rgb


def clean_jpeg(seed: int) -> bytes:
    rgb = natural_image(96, 128, seed).astype(np.float64)
    return encode_jpeg(np.clip(np.round(rgb * 255 / rgb.max()), 0, 255).astype(np.uint8), 90)


@pytest.fixture(scope="module")
def stage() -> RestoreStage:
    return RestoreStage("auto")


class Probe(Backend):
    """Records what it was given; heat = its red channel, so the pixels it saw show."""

    spec = MethodSpec(name="probe", summary="test probe", uses_jpeg=True)
    seen: ClassVar[list[Any]] = []

    def analyze(self, image: Any) -> Result:
        Probe.seen.append(image)
        return Result.from_heatmap(image.rgb[:, :, 0] / 255.0, self.threshold)


class FixedStage(RestoreStage):
    """A stage whose decision is given (no network): the policy logic alone."""

    def __init__(self, decision: dict[str, Any]) -> None:
        super().__init__("off")
        self.mode = "auto"
        self.decision = decision

    def decide(self, rgb: np.ndarray) -> dict[str, Any]:
        return dict(self.decision)

    def restore(self, rgb: np.ndarray, decision: dict[str, Any]) -> np.ndarray:
        return np.clip(rgb.astype(np.int16) + 40, 0, 255).astype(np.uint8)


FIRED = {"restored": True, "type": "brightness", "alpha": -0.16, "beta": None,
         "clipped_fraction": 0.1}


def test_modes_and_default() -> None:
    assert RESTORE_MODES == ("auto", "on", "off")
    assert DEFAULT_RESTORE_MODE in RESTORE_MODES
    from forgectl.backends.restorer import DEFAULT_RESTORE_WEIGHTS
    from forgectl.commands._options import (
        MAX_PIXELS_DEFAULT,
        RESTORE_DEFAULT,
        RESTORE_WEIGHTS_DEFAULT,
    )
    from forgectl.intake import DEFAULT_MAX_PIXELS

    # The CLI's copies, written out so that --help imports no numpy.
    assert RESTORE_DEFAULT == DEFAULT_RESTORE_MODE
    assert MAX_PIXELS_DEFAULT == DEFAULT_MAX_PIXELS
    assert RESTORE_WEIGHTS_DEFAULT == DEFAULT_RESTORE_WEIGHTS


def test_a_bad_mode_is_one_line_and_exit_2(tmp_path: Path, cli: Any) -> None:
    src = tmp_path / "a.jpg"
    src.write_bytes(clean_jpeg(0))
    for command in (["localize", src, "-m", "ela", "-o", tmp_path / "o"],
                    ["explain", src, "--methods", "ela", "-o", tmp_path / "e"],
                    ["benchmark", tmp_path, "-m", "ela", "-o", tmp_path / "b"]):
        res = cli([*command, "--restore", "maybe"])
        assert res.exit_code == 2, res.output
        assert "--restore must be one of auto, on, off" in res.stderr
        assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1


def test_policy_per_method() -> None:
    expect = {"dq": ORIGINAL, "ghost": ORIGINAL, "grid": ORIGINAL, "reconwave": OWN,
              "omni": RESTORED, "ela": RESTORED, "noise": RESTORED, "copymove": RESTORED,
              "auto": RESTORED}
    for name, policy in expect.items():
        assert method_policy(registry.get_spec(name))[0] == policy, name
    for name in registry.available():  # every method has a policy and a reason
        kind, why = method_policy(registry.get_spec(name))
        assert kind in (RESTORED, ORIGINAL, OWN) and why
    # An unlisted method that needs a JPEG file keeps the file.
    assert method_policy(MethodSpec(name="x", summary="", needs_jpeg=True))[0] == ORIGINAL


def test_restored_image_has_the_grid_and_no_jpeg_data() -> None:
    image = image_from_bytes(clean_jpeg(1), name="a.jpg")
    assert image.is_jpeg
    out = restored_image(image, image.rgb[::-1].copy())
    assert out.jpeg is None and out.format == "RAW" and out.rgb.shape == image.rgb.shape
    assert out.name == image.name and image.is_jpeg  # the input is left alone
    with pytest.raises(ValueError):
        restored_image(image, image.rgb[1:])


def test_off_is_the_method_itself() -> None:
    backend = registry.load("ela")
    assert RestoreStage("off").wrap(backend) is backend
    assert RestoreStage("off").settings() is None


def test_pixel_methods_get_restored_pixels_jpeg_methods_the_file() -> None:
    image = image_from_bytes(clean_jpeg(2), name="a.jpg")
    stage = FixedStage(FIRED)
    Probe.seen.clear()
    result, block = run_with_stage(stage, Probe(), image)
    seen = Probe.seen[-1]
    assert seen.jpeg is None and np.array_equal(seen.rgb, stage.restore(image.rgb, FIRED))
    assert block["fired"] and block["method_saw_restored"] and block["method_input"] == RESTORED
    assert block["kind"] == "brightness" and block["parameter"] == {"alpha": -0.16}
    assert block["clipped_fraction"] == 0.1
    assert result.heatmap.shape == image.rgb.shape[:2]
    assert result.note.startswith("ran on restored pixels")

    dq = registry.load("dq")
    alone = dq.localize(image)
    result, block = run_with_stage(stage, dq, image)
    assert result.applicable and np.array_equal(result.heatmap, alone.heatmap)
    assert block["fired"] and not block["method_saw_restored"]
    assert block["method_input"] == ORIGINAL
    assert "ran on the file as it is" in result.facts["restoration_stage"]

    # Not fired: the method runs on the image itself and its result is left as it made it.
    quiet = FixedStage({"restored": False, "type": "none"})
    Probe.seen.clear()
    result, block = run_with_stage(quiet, Probe(), image)
    assert Probe.seen[-1] is image and "restoration_stage" not in result.facts
    assert not block["fired"] and block["kind"] == "none" and block["parameter"] is None


def test_outputs_are_byte_identical_to_off_where_it_does_not_fire(
    tmp_path: Path, cli: Any
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for seed in range(3):
        (src / f"clean{seed}.jpg").write_bytes(clean_jpeg(seed))
    # A gain of 0.7 clips nothing: the exact inverse restores it (no network: fast).
    dark = contrast(clean_rgb(4), 0.7)
    (src / "dim.png").write_bytes(png_bytes(dark))
    runs = {}
    for mode in ("off", "auto"):
        res = cli(["localize", src, "-m", "ela", "--no-isolate", "--restore", mode,
                   "-o", tmp_path / mode])
        assert res.exit_code == 0, res.output
        runs[mode] = {Path(json.loads(line)["input"]["path"]).stem: json.loads(line)
                      for line in (tmp_path / mode / "results.jsonl").read_text().splitlines()}
    assert all("restoration" not in r for r in runs["off"].values())
    fired = {k for k, r in runs["auto"].items() if r["restoration"]["fired"]}
    assert fired == {"dim"}
    for stem, record in runs["auto"].items():
        off = runs["off"][stem]
        same = [(tmp_path / m / (stem + s)).read_bytes() for s in IMAGE_SUFFIXES
                for m in ("off", "auto")]
        if stem in fired:
            assert record["restoration"]["method_saw_restored"]
            assert record["restoration"]["kind"] == "contrast"
            assert abs(record["restoration"]["parameter"]["beta"] - 0.7) < 0.01
            assert record["restoration"]["clipped_fraction"] == 0
            assert same[2] != same[3]  # the heatmap changed ...
            assert load_image(tmp_path / "auto" / f"{stem}.heatmap.png").rgb.shape[:2] == \
                dark.shape[:2]  # ... on the input's grid
            continue
        for a, b in zip(same[::2], same[1::2], strict=True):
            assert a == b, stem
        drop = ("restoration", "timings", "outputs", "output_sha256")
        assert ({k: v for k, v in record.items() if k not in drop}
                == {k: v for k, v in off.items() if k not in drop})
        assert record["output_sha256"] == off["output_sha256"]


def test_resume_settings_include_the_stage(tmp_path: Path, stage: RestoreStage) -> None:
    src = tmp_path / "a.jpg"
    src.write_bytes(clean_jpeg(0))
    plain = registry.load("ela")
    wrapped = stage.wrap(registry.load("ela"))
    assert isinstance(wrapped, RestoringBackend)
    item = pipeline.plan_outputs([src], tmp_path / "out")[0]
    record = pipeline.process_file(wrapped, item)
    assert record["complete"] and record["restoration"]["settings"]["mode"] == "auto"
    assert pipeline.completed_record(item, pipeline.run_settings(wrapped)) is not None
    assert pipeline.completed_record(item, pipeline.run_settings(plain)) is None
    assert pipeline.completed_record(
        item, pipeline.run_settings(RestoreStage("on").wrap(plain))) is None
    # The wrapper names the method: records and reports are the method's.
    assert wrapped.spec is plain.spec and wrapped.options == plain.options
    assert wrapped.threshold == plain.threshold and wrapped.weights_id is None


def test_the_wrapped_method_pickles_without_its_network(stage: RestoreStage) -> None:
    wrapped = stage.wrap(registry.load("ela"))
    image = image_from_array(brightness(clean_rgb(1), -0.3), name="dim")
    first = wrapped.localize(image)
    assert stage._restorer is not None  # loaded by the call
    copy = pickle.loads(pickle.dumps(wrapped))  # what a worker process receives
    assert copy.restore_stage._restorer is None
    again = copy.localize(image)
    assert np.array_equal(first.heatmap, again.heatmap)
    assert copy.restore_stage_record == wrapped.restore_stage_record


def test_benchmark_items_record_the_stage(tmp_path: Path, stage: RestoreStage) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(clean_rgb(2)))
    item = Item(key="a.png", image=path, mask=None, tampered=False)
    from forgectl.evaluation.perturb import Perturbation

    wrapped = stage.wrap(registry.load("ela"))
    rec, _ = analyze_item(wrapped, item)
    assert rec["status"] == "ok" and rec["restored"] is False
    rec, _ = analyze_item(wrapped, item, Perturbation("contrast", 2.0))
    assert rec["restored"] is True and rec["method_saw_restored"] is True
    rec, _ = analyze_item(registry.load("ela"), item)
    assert "restored" not in rec


def test_explain_runs_each_method_on_its_input(tmp_path: Path, cli: Any) -> None:
    # Brightened, then saved as a JPEG: dq can read the file, ela should see restored pixels.
    src = tmp_path / "dim.jpg"
    src.write_bytes(encode_jpeg(brightness(clean_rgb(3), -0.4), 95))
    res = cli(["explain", src, "--methods", "ela,dq", "--restore", "auto", "-o", tmp_path])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "dim.report.json").read_text())
    block = record["restoration"]
    assert block["fired"] and block["kind"] == "brightness"
    assert block["methods"]["ela"]["method_saw_restored"] is True
    assert block["methods"]["dq"] == {**block["methods"]["dq"], "method_input": ORIGINAL,
                                      "method_saw_restored": False}
    off = cli(["explain", src, "--methods", "ela", "--restore", "off", "-o", tmp_path / "off"])
    assert off.exit_code == 0 and "restoration" not in json.loads(
        (tmp_path / "off" / "dim.report.json").read_text())


def test_real_clean_photos_rarely_fire(casia_dir: Path, stage: RestoreStage) -> None:
    # The full measurement (332 images) is in docs/RESTORE.md; here the first 12 authentic
    # photos, none of which it restores.
    photos = sorted((casia_dir / "authentic").iterdir())[:12]
    fired = [p.name for p in photos if stage.decide(load_image(p).rgb)["restored"]]
    assert fired == []


def test_on_tries_the_likeliest_disturbance_where_auto_declines(stage: RestoreStage) -> None:
    rgb = clean_rgb(2)
    assert stage.decide(rgb)["restored"] is False
    forced = RestoreStage("on").decide(rgb)
    assert forced["forced"]["type"] in ("brightness", "contrast")
    # Tried, then either confirmed by the pixels or vetoed by them (with the reason).
    assert forced["restored"] or forced["veto"]


class OwnRestorer(Probe):
    """Stands for reconwave: restores by itself and says so in its facts."""

    spec = MethodSpec(name="reconwave", summary="test stand-in")

    def analyze(self, image: Any) -> Result:
        facts = {"restoration": {"restored": True, "type": "contrast", "alpha": None,
                                 "beta": 2.0, "clipped_fraction": 0.2}}
        return Result.from_heatmap(image.rgb[:, :, 0] / 255.0, self.threshold, facts=facts)


def test_a_method_with_its_own_restoration_is_reported_not_restored_twice() -> None:
    image = image_from_bytes(clean_jpeg(3), name="a.jpg")
    stage = FixedStage(FIRED)
    result, block = run_with_stage(stage, OwnRestorer(), image)
    assert block["method_input"] == OWN and block["method_saw_restored"]
    assert block["kind"] == "contrast" and block["parameter"] == {"beta": 2.0}
    assert np.array_equal(result.heatmap, (image.rgb[:, :, 0] / 255.0).astype(np.float32))
