"""`--method auto`: the fusion's model, fitting, backend, CLI default and explain headline.

A tiny fusion over two cheap classical members (ela, noise) is fitted here on fabricated
member outputs, so nothing depends on the shipped weights; the shipped fusion goes through the
registry contract (tests/test_contract.py) like every ready method.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from forgectl import metrics as M
from forgectl import registry
from forgectl.errors import UsageError, WeightsError
from forgectl.fusion.collect import LabelledImage
from forgectl.fusion.features import (
    IMAGE_FEATURES,
    PIXEL_FEATURES,
    MemberOutput,
    image_features,
    member_stats,
    pixel_features,
)
from forgectl.fusion.fit import (
    FitConfig,
    average_tree_verdicts,
    evaluate,
    fit_all,
    fit_model,
    predict,
    prepare,
    with_blinded_copies,
)
from forgectl.fusion.model import FusionModel
from forgectl.intake import image_from_array
from tests.helpers import natural_image

MEMBERS = ["ela", "noise"]


def _example(i: int, rng: np.random.Generator, tampered: bool, group: str) -> LabelledImage:
    """Member "ela" sees the forgery (its map is the mask plus noise, its score high on
    forgeries); member "noise" sees nothing (uniform noise)."""
    h, w = 48, 64
    truth = np.zeros((h, w), bool)
    if tampered:
        y, x = rng.integers(0, h - 16), rng.integers(0, w - 20)
        truth[y:y + 16, x:x + 20] = True
    seeing = np.clip(0.7 * truth + 0.25 * rng.random((h, w)), 0, 1).astype(np.float32)
    blind = rng.random((h, w)).astype(np.float32)
    outputs = {
        "ela": MemberOutput("ela", seeing, 0.6 + 0.3 * rng.random() if tampered
                            else 0.4 * rng.random(), True),
        "noise": MemberOutput("noise", blind, float(rng.random()), True),
    }
    image = image_from_array(natural_image(h, w, seed=i))
    return LabelledImage(f"{group}/{i}", group, image, truth, tampered, outputs)


@pytest.fixture(scope="module")
def fitted() -> tuple[FusionModel, list[LabelledImage]]:
    rng = np.random.default_rng(0)
    examples = [_example(i, rng, i % 2 == 0, "dev" if i < 40 else "synthetic")
                for i in range(60)]
    data = prepare(examples, MEMBERS, "dev")
    model = fit_model(data, np.arange(len(examples)), FitConfig(hidden=4, max_iter=60))
    return model, examples


def test_fit_learns_the_member_that_sees(fitted):
    model, examples = fitted
    figures = evaluate([(ex, *predict(model, ex)) for ex in examples])
    assert figures["f1"] > 0.8
    assert figures["image_auc"] > 0.95
    assert figures["authentic_fpr"] < 0.05


def test_fit_all_fits_on_synthetic_only_and_reports_the_unchosen_half():
    rng = np.random.default_rng(1)
    examples = [_example(i, rng, i % 2 == 0, "dev" if i < 40 else "synthetic")
                for i in range(80)]
    data = prepare(examples, MEMBERS, "dev")
    model, report = fit_all(data, FitConfig(hidden=0))
    # The dev set is never fitted on: the same fit on the synthetic examples alone gives the
    # same numbers; only the two thresholds come from the dev set's half A.
    alone = fit_model(data, np.flatnonzero(~data.real), FitConfig(hidden=0))
    for name, array in alone.arrays.items():
        np.testing.assert_allclose(model.arrays[name], array, rtol=1e-6, err_msg=name)
    chosen = report["thresholds_on_dev_half_a"]
    assert (model.pixel_threshold, round(model.verdict_threshold, 6)) == (
        chosen["pixel"], chosen["verdict"])
    half_a, half_b = report["dev_half_a"], report["dev_half_b"]
    assert half_a["n_tampered"] + half_a["n_authentic"] == 20
    assert half_b["n_tampered"] + half_b["n_authentic"] == 20
    assert half_a["fail_on_0.5_authentic"] <= 0.10  # the verdict threshold's rule, on A
    gates = half_b["fail_on"]  # the CI-gate table: a higher gate never stops more images
    assert list(gates) == ["0.5", "0.6", "0.7", "0.8", "0.9"]
    assert gates["0.5"] == {"tampered": half_b["fail_on_0.5_tampered"],
                            "authentic": half_b["fail_on_0.5_authentic"]}
    for kind in ("tampered", "authentic"):
        rates = [g[kind] for g in gates.values()]
        assert rates == sorted(rates, reverse=True), kind
    assert half_b["f1"] > 0.6 and half_b["ece"] is not None
    assert model.contributions["ela"] > model.contributions["noise"]


def test_verdict_threshold_flags_at_most_a_tenth_of_authentic_images():
    rng = np.random.default_rng(2)
    examples = [_example(i, rng, i % 3 == 0, "synthetic") for i in range(60)]
    data = prepare(examples, MEMBERS, None)
    model = fit_model(data, np.arange(len(examples)), FitConfig(hidden=0))
    scores = np.array([predict(model, ex)[0] for ex in examples])
    authentic = ~data.labels
    assert (scores[authentic] >= 0.5).mean() <= 0.10
    assert (scores[~authentic] >= 0.5).mean() > 0.8


def test_blinded_copies_make_one_member_blind_per_row():
    width = len(IMAGE_FEATURES)
    x = np.arange(1, 1 + 5 * 2 * width, dtype=np.float32).reshape(5, 2 * width)
    y = np.array([True, False, True, False, True])
    xb, yb = with_blinded_copies(x, y, n_members=2, copies=2, seed=0)
    assert xb.shape == (15, 2 * width) and (xb[:5] == x).all()
    assert (yb == np.tile(y, 3)).all()
    blinded = set()
    for row, original in zip(xb[5:], np.tile(x, (2, 1)), strict=True):
        blocks, kept = row.reshape(2, width), original.reshape(2, width)
        zero = np.array([not block.any() for block in blocks])
        assert zero.sum() == 1  # exactly one member blind, the other untouched
        assert (blocks[~zero] == kept[~zero]).all()
        blinded.add(int(np.flatnonzero(zero)[0]))
    assert blinded == {0, 1}
    assert with_blinded_copies(x, y, 2, 0, 0)[0] is x
    with pytest.raises(ValueError, match="verdict_blind"):
        FitConfig(verdict_blind=-1)


def test_a_verdict_fitted_with_blinded_copies_still_learns(fitted):
    _, examples = fitted
    data = prepare(examples, MEMBERS, "dev")
    model = fit_model(data, np.arange(len(examples)),
                      FitConfig(hidden=0, verdict="trees", verdict_blind=2))
    figures = evaluate([(ex, *predict(model, ex)) for ex in examples])
    assert figures["image_auc"] > 0.95 and figures["f1"] > 0.8


def test_blind_member_has_zero_features():
    shape = (8, 10)
    outs = [MemberOutput("ela", np.full(shape, 0.7, np.float32), 0.9, True),
            MemberOutput.blind("noise", shape)]
    px = pixel_features(outs)
    n = len(PIXEL_FEATURES)
    assert px.shape == (80, 2 * n)
    assert not px[:, n:].any() and px[:, n - 1].all()  # ``applicable`` column of ela
    assert image_features(outs)[len(IMAGE_FEATURES):].sum() == 0


def test_peak_is_a_region_not_a_pixel_at_any_size():
    """One hot pixel barely moves the peak; a lit region a tenth of the side wide reaches its
    value whether the map is CASIA-sized or 12 MP-sized (the box follows the image)."""
    for h, w in ((256, 384), (3000, 4000)):
        hm = np.zeros((h, w), np.float32)
        hm[h // 2, w // 2] = 1.0
        assert member_stats(MemberOutput("m", hm, 0.0, True)).peak < 0.05
        hm[h // 3: h // 3 + h // 10, w // 3: w // 3 + w // 10] = 0.8
        assert member_stats(MemberOutput("m", hm, 0.0, True)).peak == pytest.approx(0.8, abs=0.01)


def test_tree_verdict_walks_exactly_the_fitted_trees():
    """The numpy walk of the exported trees gives scikit-learn's own logits, and a tree
    verdict fits, separates, saves and loads like the logistic one."""
    from forgectl.fusion.fit import _fit_tree_verdict

    rng = np.random.default_rng(3)
    x = rng.random((200, 6)).astype(np.float32)
    y = x[:, 1] * x[:, 4] + 0.1 * rng.random(200) > 0.3  # an interaction no line draws
    arrays, logits = _fit_tree_verdict(x, y, FitConfig(verdict="trees", verdict_trees=40))
    probe = FusionModel(members=["m"], arrays={
        **arrays, "pixel_mean": np.zeros(2), "pixel_scale": np.ones(2),
        "hidden_w": np.zeros((2, 0)), "hidden_b": np.zeros(0), "out_w": np.zeros(2),
        "out_b": np.zeros(1)})
    walked = np.array([probe.verdict(v) for v in x])
    np.testing.assert_allclose(walked, 1 / (1 + np.exp(-logits)), rtol=1e-6, atol=1e-9)
    assert probe.verdict_kind == "trees" and M.image_auc(walked, y) > 0.95
    partial = dict(probe.arrays)
    del partial["verdict_tree_left"]
    with pytest.raises(WeightsError, match="part of a tree verdict"):
        FusionModel(members=["m"], arrays=partial)


def test_bagged_tree_verdict_walks_the_mean_of_its_bags_logits():
    """Bags of different sizes (node counts) merge into one tree verdict whose numpy walk is
    the mean of the bags' own logits, and a bagged fit still separates."""
    from forgectl.fusion.fit import _fit_tree_verdict

    rng = np.random.default_rng(5)
    x = rng.random((120, 4)).astype(np.float32)
    y = x[:, 0] + 0.2 * rng.random(120) > 0.6
    bags = [_fit_tree_verdict(x, y, FitConfig(verdict="trees", verdict_trees=n,
                                              verdict_depth=d, seed=s))
            for n, d, s in ((30, 2, 0), (12, 3, 1), (20, 1, 2))]
    arrays, logits = average_tree_verdicts(bags)
    assert arrays["verdict_tree_feature"].shape[0] == 62
    np.testing.assert_allclose(logits, np.mean([lg for _, lg in bags], 0))
    probe = FusionModel(members=["m"], arrays={
        **arrays, "pixel_mean": np.zeros(2), "pixel_scale": np.ones(2),
        "hidden_w": np.zeros((2, 0)), "hidden_b": np.zeros(0), "out_w": np.zeros(2),
        "out_b": np.zeros(1)})
    walked = np.array([probe.verdict(v) for v in x])
    np.testing.assert_allclose(walked, 1 / (1 + np.exp(-logits)), rtol=1e-6, atol=1e-9)
    assert average_tree_verdicts(bags[:1]) is bags[0]
    with pytest.raises(ValueError, match="verdict_bags"):
        FitConfig(verdict_bags=0)


def test_a_bagged_verdict_holds_every_bags_trees_and_still_learns(fitted):
    _, examples = fitted
    data = prepare(examples, MEMBERS, "dev")
    one, three = (fit_model(data, np.arange(len(examples)),
                            FitConfig(hidden=0, verdict="trees", verdict_blind=2,
                                      verdict_bags=k)) for k in (1, 3))
    assert three.arrays["verdict_tree_feature"].shape[0] == 3 * 100
    assert one.arrays["verdict_tree_feature"].shape[0] == 100
    figures = evaluate([(ex, *predict(three, ex)) for ex in examples])
    assert figures["image_auc"] > 0.95 and figures["f1"] > 0.8


def test_a_fusion_fitted_on_other_features_is_refused_at_load(fitted):
    """A logistic verdict fitted on five image features per member (before ``peak``) is one
    WeightsError naming the refit, not a shape error on every image."""
    model, _ = fitted
    old = {k: v for k, v in model.arrays.items() if not k.startswith("verdict_tree")}
    n = (len(IMAGE_FEATURES) - 1) * len(MEMBERS)
    old.update(verdict_mean=np.zeros(n), verdict_scale=np.ones(n), verdict_coef=np.ones(n),
               verdict_bias=np.zeros(1))
    with pytest.raises(WeightsError, match="fitted on 10 image features.*refit"):
        FusionModel(members=MEMBERS, arrays=old)


def test_a_card_naming_other_image_features_is_refused(fitted, tmp_path):
    model, _ = fitted
    path = tmp_path / "auto-tiny.safetensors"
    model.save(path, {"format": "forgectl.model_card/1", "method": "auto",
                      "metrics": {"features": {"image": list(IMAGE_FEATURES[:-1])}}})
    with pytest.raises(WeightsError, match="fitted on the image features .*refit"):
        FusionModel.load(path)


def test_tree_verdict_fit_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    examples = [_example(i, rng, i % 2 == 0, "synthetic") for i in range(60)]
    data = prepare(examples, MEMBERS, None)
    model = fit_model(data, np.arange(len(examples)), FitConfig(hidden=0, verdict="trees"))
    assert model.verdict_kind == "trees" and "verdict_coef" not in model.arrays
    scores = np.array([predict(model, ex)[0] for ex in examples])
    assert M.image_auc(scores, data.labels) > 0.95
    path = tmp_path / "auto-tiny.safetensors"
    model.save(path, {"format": "forgectl.model_card/1", "method": "auto"})
    again = FusionModel.load(path)
    assert [predict(again, ex)[0] for ex in examples] == pytest.approx(list(scores), abs=1e-9)


def test_map_threshold_reads_one_half(fitted):
    model, _ = fitted
    t = model.pixel_threshold
    p = np.array([0.0, t / 2, t, (1 + t) / 2, 1.0], np.float32)
    out = model.to_map(p)
    assert out[2] == pytest.approx(0.5) and out[0] == 0 and out[-1] == pytest.approx(1.0)
    assert np.all(np.diff(out) > 0)
    t = model.verdict_threshold
    assert model.to_score(t) == pytest.approx(0.5)
    assert model.to_score(0.0) == 0 and model.to_score(1.0) == pytest.approx(1.0)
    assert model.to_score(t / 2) < 0.5 < model.to_score((1 + t) / 2)


def test_save_load_round_trip_and_digest(fitted, tmp_path):
    model, examples = fitted
    path = tmp_path / "auto-tiny.safetensors"
    card = model.save(path, {"format": "forgectl.model_card/1", "method": "auto"})
    assert card["weights"]["parameters"] == model.parameters < 1000
    again = FusionModel.load(path)
    assert again.members == MEMBERS and again.pixel_threshold == model.pixel_threshold
    assert again.verdict_threshold == model.verdict_threshold
    v1, m1 = predict(model, examples[0])
    v2, m2 = predict(again, examples[0])
    assert v1 == pytest.approx(v2) and np.allclose(m1, m2)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        FusionModel.load(path)


@pytest.fixture
def weights_dir(fitted, tmp_path, monkeypatch) -> Iterator[Path]:
    """A weights folder holding only a fusion over ela and noise, as if shipped."""
    model, _ = fitted
    folder = tmp_path / "weights"
    model.save(folder / "auto-tiny.safetensors", {"format": "forgectl.model_card/1",
                                                   "method": "auto"})
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(folder))
    entry = registry.entry("auto")
    with registry.registered(registry.MethodEntry(entry.name, entry.backend, entry.recipe)):
        yield folder


def test_localize_defaults_to_auto(weights_dir, tmp_path, cli):
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.fromarray(natural_image(64, 80, seed=5)).save(photo, quality=90)
    res = cli(["localize", photo, "--out", tmp_path / "out", "--no-isolate"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert record["method"]["name"] == "auto"
    members = record["facts"]["members"]
    assert [m["method"] for m in members] == MEMBERS
    assert all(m["seconds"] >= 0 and "contribution" in m for m in members)
    assert (tmp_path / "out" / "photo.reliability.png").is_file()


def test_verdict_effects_name_the_member_that_saw(fitted):
    """On forgeries the seeing member's evidence raises the score (blinding it lowers the
    score by its effect) and the blind-to-everything member moves it little; the reading names
    the driver."""
    from forgectl.fusion.backend import AutoBackend, verdict_effects

    model, examples = fitted
    forged = [ex for ex in examples if ex.tampered]
    effects = [verdict_effects(model, [ex.outputs[m] for m in MEMBERS],
                               model.verdict(image_features([ex.outputs[m] for m in MEMBERS])))
               for ex in forged]
    assert np.mean([e["ela"] for e in effects]) > 0.2
    assert np.mean([abs(e["noise"]) for e in effects]) < np.mean([e["ela"] for e in effects]) / 3
    ex = forged[0]
    outs = [ex.outputs[m] for m in MEMBERS]
    result = AutoBackend().fuse(model, ex.image, outs)
    by_member = {m["method"]: m["verdict_effect"] for m in result.facts["members"]}
    assert by_member["ela"] == pytest.approx(effects[0]["ela"], abs=1e-4)
    blind_score = model.to_score(model.verdict(image_features(
        [MemberOutput.blind("ela", ex.truth.shape), ex.outputs["noise"]])))
    assert result.score - blind_score == pytest.approx(by_member["ela"], abs=1e-4)
    if by_member["ela"] >= 0.05:
        assert "raised most by ela (+" in AutoBackend().reading(result)


def test_members_option(weights_dir, tmp_path, cli):
    from PIL import Image

    photo = tmp_path / "p.png"
    Image.fromarray(natural_image(40, 40, seed=6)).save(photo)
    bad = cli(["localize", photo, "-p", "members=ela,omni", "--out", tmp_path / "o"])
    assert bad.exit_code == 2 and "omni" in bad.output and "\n" not in bad.output.strip()
    ok = cli(["localize", photo, "-p", "members=ela", "--out", tmp_path / "o", "--no-isolate"])
    assert ok.exit_code == 0, ok.output
    record = json.loads((tmp_path / "o" / "p.json").read_text())
    noise = [m for m in record["facts"]["members"] if m["method"] == "noise"][0]
    assert not noise["applicable"] and noise["note"] == "not selected"


def test_explain_opens_with_the_fusion_and_reuses_members(weights_dir, monkeypatch):
    from forgectl import report

    calls: list[str] = []
    load = registry.load

    def counting_load(name, **kw):
        calls.append(name)
        return load(name, **kw)

    monkeypatch.setattr(registry, "load", counting_load)
    image = image_from_array(natural_image(64, 64, seed=7), jpeg_quality=90)
    explanation = report.explain_image(image, ["auto", "ela", "noise"])
    assert [e.name for e in explanation.entries] == ["auto", "ela", "noise"]
    assert calls.count("ela") == 1 and calls.count("noise") == 1  # members ran once
    head = explanation.entries[0]
    assert "reliability" in head.result.maps and head.reading.split(":")[0] in (
        "manipulated", "no manipulation found")


def test_calibration_metrics():
    y = np.array([0] * 50 + [1] * 50)
    assert M.expected_calibration_error(np.full(100, 0.5), y) == pytest.approx(0.0)
    assert M.expected_calibration_error(np.where(y == 1, 1.0, 0.0), y) == pytest.approx(0.0)
    assert M.expected_calibration_error(np.full(100, 0.95), y) == pytest.approx(0.45)
    points = M.calibration_bins(np.array([0.05, 0.15, 0.95]), np.array([0, 0, 1]))
    assert [p["n"] for p in points] == [1, 1, 1]


def test_untrained_auto_refuses_in_one_line(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(tmp_path))
    photo = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(natural_image(32, 32, seed=8)).save(photo)
    res = cli(["localize", photo, "--out", tmp_path / "o"])
    assert res.exit_code != 0
    assert len(res.output.strip().splitlines()) == 1


def test_set_reaches_the_fusion_config_and_rejects_unknown_keys(tmp_path, cli):
    from forgectl.fusion.recipe import CONFIGS, FusionRecipe

    recipe = FusionRecipe()
    config = recipe.config_for("tiny", {"members": ["omni", "mun"], "fit.verdict_c": 2.0})
    assert config["members"] == ["omni", "mun"] and config["fit"]["verdict_c"] == 2.0
    assert CONFIGS["tiny"]["members"] != ["omni", "mun"]  # a copy: the shipped config stays
    with pytest.raises(UsageError, match="unknown config key 'lr'"):
        recipe.config_for("tiny", {"lr": 1e-3})  # a network trainer key means nothing here
    # Through the CLI: a usage error before anything is collected or written.
    res = cli(["train", "-m", "auto", "-i", tmp_path, "--out", tmp_path / "run",
               "--set", "nosuch=1"])
    assert res.exit_code == 2, res.output
    assert "unknown config key 'nosuch'" in res.output
    assert not (tmp_path / "run").exists()
    # A network trainer's option would be ignored by the fit: refused, nothing written.
    res = cli(["train", "-m", "auto", "-i", tmp_path, "--out", tmp_path / "run",
               "--steps", "100", "--lr", "1e-3"])
    assert res.exit_code == 2, res.output
    assert "--steps, --lr do not apply" in res.output and "\n" not in res.output.strip()
    assert not (tmp_path / "run").exists()


def test_column_path_equals_matrix_path(fitted):
    """The backend's column-by-column map (no (N, F) matrix) gives the fitting code's map."""
    from forgectl.fusion.features import pixel_columns

    model, examples = fitted
    linear = FusionModel(members=model.members, arrays={
        **model.arrays, "hidden_w": np.zeros((model.arrays["pixel_mean"].size, 0)),
        "hidden_b": np.zeros(0), "out_w": np.linspace(-1, 1, model.arrays["pixel_mean"].size),
        "out_b": np.array([0.3])})
    for m in (model, linear):
        outs = [examples[0].outputs[k] for k in m.members]
        n = examples[0].truth.size
        a = m.pixel_probability(pixel_features(outs), 0.7)
        b = m.pixel_probability_columns(pixel_columns(outs), n, 0.7)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_shipped_fusion_was_fitted_on_the_shipped_member_weights():
    # A retrained member changes the features the fusion's numbers were fitted on: shipping
    # one without refitting auto must fail here, not drift silently.
    from forgectl.fusion.backend import AutoBackend
    from tests.helpers import REPO

    card = json.loads((REPO / "weights" / "auto-tiny.json").read_text())
    recorded = card["training"]["member_sha256"]
    assert "omni" in recorded
    auto = AutoBackend(runtime="torch")
    for member, sha in recorded.items():
        if sha is None:
            continue
        # The method's own file, or the copy auto keeps of the one it was fitted on.
        assert auto.member(member).weights_sha256 == sha, f"auto was fitted on another {member}"
    # Likewise a member's changed default option (copymove's block stage was one).
    from forgectl.fusion.collect import member_options

    options = card["training"]["member_options"]
    assert set(options) == set(card["config"]["members"])
    for member, recorded_options in options.items():
        assert member_options(registry.load(member)) == recorded_options, (
            f"auto was fitted with other {member} options: refit it")


def test_members_maps_are_freed_unless_explain_keeps_them(fitted, tmp_path, monkeypatch):
    """localize: a linear map takes each member's share as it runs and drops its maps; with
    ``keep_parts`` (explain) everything is kept and the column path gives the same map."""
    from forgectl.fusion.backend import AutoBackend

    model, _ = fitted
    width = model.arrays["pixel_mean"].size
    linear = FusionModel(members=model.members, arrays={
        **model.arrays, "hidden_w": np.zeros((width, 0), np.float32),
        "hidden_b": np.zeros(0, np.float32),
        "out_w": np.linspace(-1, 1, width).astype(np.float32),
        "out_b": np.array([0.3], np.float32)})
    linear.save(tmp_path / "auto-tiny.safetensors", {"format": "forgectl.model_card/1",
                                                     "method": "auto"})
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(tmp_path))
    image = image_from_array(natural_image(64, 80, seed=3), jpeg_quality=85)
    freeing, keeping = AutoBackend(), AutoBackend()
    keeping.keep_parts = True
    freed, kept = freeing.localize(image), keeping.localize(image)
    assert linear.is_linear
    assert all(o.heatmap.size == 0 and o.result is None for o in freeing.last_outputs)
    assert freeing.parts() == []
    assert [name for name, _, _ in keeping.parts()] == MEMBERS
    assert all(o.heatmap.shape == (64, 80) for o in keeping.last_outputs)
    np.testing.assert_allclose(freed.heatmap, kept.heatmap, atol=1e-6)
    assert freed.score == kept.score
    untimed = [[{k: v for k, v in m.items() if k != "seconds"} for m in r.facts["members"]]
               for r in (freed, kept)]
    assert untimed[0] == untimed[1]


def test_auto_keeps_running_the_member_file_it_was_fitted_on(tmp_path, monkeypatch):
    """A retrained member that a refit of auto did not pay for serves ``-m NAME`` while auto
    runs the copy it was fitted on (``auto-tiny.NAME.safetensors``); with neither file
    matching the fitted sha256 auto refuses to run, in one line."""
    from forgectl.fusion.backend import member_weights_file
    from forgectl.weights import sha256_file

    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(tmp_path))
    fusion = tmp_path / "auto-tiny.safetensors"
    own = tmp_path / "omni-tiny.safetensors"
    kept = tmp_path / "auto-tiny.omni.safetensors"
    for weights, content in ((own, b"retrained omni"), (kept, b"the omni auto was fitted on")):
        weights.write_bytes(content)
        weights.with_suffix(".json").write_text(json.dumps(
            {"weights": {"sha256": sha256_file(weights)}}))
    assert member_weights_file(fusion, "omni", sha256_file(own)) is None
    assert member_weights_file(fusion, "omni", sha256_file(kept)) == kept
    kept.unlink()  # a wheel ships cards and ONNX twins, not the PyTorch files
    assert member_weights_file(fusion, "omni", sha256_file(own)) is None
    assert member_weights_file(fusion, "omni", json.loads(kept.with_suffix(".json").read_text())[
        "weights"]["sha256"]) == kept
    assert member_weights_file(fusion, "omni", None) is None  # classical members
    with pytest.raises(WeightsError, match="auto-tiny.safetensors was fitted on omni weights "
                                           "[0-9a-f]{12}, which are neither omni-tiny.safetensors"
                                           " nor auto-tiny.omni.safetensors: refit it"):
        member_weights_file(fusion, "omni", "0" * 64)
