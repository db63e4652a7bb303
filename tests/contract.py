"""The contract every backend honours. Subclass ``BackendContract`` with ``method = "name"``.

``tests/test_contract.py`` also runs these checks on every registry entry, so a method cannot
be registered without passing them.
"""

from __future__ import annotations

import copy
import json
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from forgectl import registry
from forgectl.intake import ForensicImage, image_from_array
from forgectl.synth.sample import SynthSample
from tests.helpers import natural_image


def check_result(backend, image: ForensicImage) -> None:
    before = image.rgb.copy()
    result = backend.localize(image)
    assert np.array_equal(image.rgb, before), "the method modified its input"
    assert result.heatmap.shape == (image.height, image.width)
    assert result.heatmap.dtype == np.float32
    assert np.isfinite(result.heatmap).all()
    assert 0.0 <= float(result.heatmap.min()) and float(result.heatmap.max()) <= 1.0
    assert result.mask.shape == result.heatmap.shape and result.mask.dtype == bool
    assert 0.0 <= result.score <= 1.0
    json.dumps(result.facts)  # JSON-ready
    for m in result.maps.values():
        assert m.shape == result.heatmap.shape
    if not backend.spec.decides_mask and result.applicable:
        assert np.array_equal(result.mask, result.heatmap >= backend.threshold)
    if not result.applicable:
        assert result.note
    assert isinstance(backend.reading(result), str) and backend.reading(result)


class BackendContract:
    """Generic checks; a subclass sets ``method`` (and may add method-specific tests)."""

    method: str = ""

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        return registry.load(cls.method)

    def test_spec_matches_registry_name(self, backend):
        assert backend.spec.name == self.method
        assert backend.spec.kind in ("classical", "learned", "fusion")

    def test_jpeg_input(self, backend):
        check_result(backend, image_from_array(natural_image(96, 128, seed=1), jpeg_quality=85))

    def test_odd_sized_jpeg(self, backend):
        check_result(backend, image_from_array(natural_image(67, 45, seed=2), jpeg_quality=75))

    def test_pixel_input(self, backend):
        image = image_from_array(natural_image(80, 96, seed=3))
        result = backend.localize(image)
        if backend.spec.needs_jpeg:
            assert not result.applicable and "JPEG" in result.note
        check_result(backend, image)

    #: Options for the mirror test that keep everything but the flip out of it (a learned
    #: restoration step decides on the mirrored image afresh).
    flip_test_options: ClassVar[dict[str, Any]] = {}

    def test_flip_option_averages_in_the_mirror_image(self, backend):
        """With ``flip``, mirroring the input mirrors the heatmap, exactly: the average of
        ``h(x)`` and ``mirror(h(mirror(x)))`` is the same pair of network calls either way."""
        if "flip" not in backend.options:
            pytest.skip(f"{self.method} has no flip option")
        options = {**backend.options, **self.flip_test_options, "flip": True}
        flipped = type(backend)(weights=backend.weights_path, threshold=backend.threshold,
                                runtime=backend.runtime, **options)
        rgb = natural_image(64, 96, seed=5)  # whole 8x8 blocks: every column is mirrored
        a = flipped.localize(image_from_array(rgb))
        b = flipped.localize(image_from_array(np.ascontiguousarray(rgb[:, ::-1])))
        check_result(flipped, image_from_array(rgb))
        np.testing.assert_allclose(b.heatmap, a.heatmap[:, ::-1], atol=1e-6)
        assert a.facts["flip"] is True
        single = type(backend)(weights=backend.weights_path, threshold=backend.threshold,
                               runtime=backend.runtime, **{**options, "flip": False})
        assert not np.allclose(single.localize(image_from_array(rgb)).heatmap, a.heatmap)

    def test_deterministic(self, backend):
        image = image_from_array(natural_image(64, 64, seed=4), jpeg_quality=90)
        a, b = backend.localize(image), backend.localize(image)
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
        assert a.score == b.score


def fake_sample(size: int = 96, seed: int = 0, forged: bool = True) -> SynthSample:
    """A JPEG sample with a rectangular "forged" region (or none), for recipe checks."""
    rgb = natural_image(size, size, seed=seed)
    mask = np.zeros((size, size), np.uint8)
    if forged:
        mask[size // 4 : size // 2, size // 3 : 2 * size // 3] = 1
    return SynthSample(image=image_from_array(rgb, jpeg_quality=90), file_bytes=b"",
                       file_ext=".jpg", mask=mask, boxes=np.zeros((0, 4), np.float32),
                       kind="splice" if forged else "authentic")


class RecipeContract:
    """What the shared trainer needs of a recipe. A subclass sets ``recipe_factory`` and may set
    ``config_name`` and ``overrides`` (a small crop, no pretrained download)."""

    recipe_factory: Any = None
    config_name: str = "tiny"
    overrides: ClassVar[dict[str, Any]] = {}

    @pytest.fixture(scope="class")
    @classmethod
    def recipe(cls):
        return cls.recipe_factory()

    @pytest.fixture(scope="class")
    @classmethod
    def config(cls, recipe):
        config = copy.deepcopy(recipe.configs[cls.config_name])
        config.update(cls.overrides)
        return config

    def test_configs_are_plain_data(self, recipe):
        assert recipe.name and self.config_name in recipe.configs
        assert any("paper" in name for name in recipe.configs), "a paper-scale config"
        for config in recipe.configs.values():
            json.dumps(config)

    def test_prepare_collate_loss_predict(self, recipe, config):
        torch.manual_seed(0)
        model = recipe.build_model(config)
        rng = np.random.default_rng(0)
        items = [recipe.prepare(fake_sample(seed=i, forged=i == 0), config, rng)
                 for i in range(2)]
        assert items[0]["mask"].ndim == 3 and items[0]["mask"].shape[0] == 1
        batch = recipe.collate(items)
        model.train()
        loss, logs = recipe.loss(model, batch, config)
        assert loss.ndim == 0 and torch.isfinite(loss)
        assert all(isinstance(v, float) for v in logs.values())
        loss.backward()
        assert any(p.grad is not None for p in model.parameters())
        prob = recipe.predict(model, batch)
        assert prob.shape == batch["mask"].shape
        assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


class EncoderContract:
    """A registered encoder's declared channels and strides are what it outputs."""

    encoder: str = ""

    def test_declared_channels_and_strides(self):
        from forgectl.nets.encoders import create_encoder

        enc = create_encoder(self.encoder, pretrained=False).eval()
        with torch.no_grad():
            maps = enc(torch.zeros(1, 3, 64, 96))
        assert [m.shape[1] for m in maps] == list(enc.channels)
        assert [(64 // s, 96 // s) for s in enc.strides] == [tuple(m.shape[-2:]) for m in maps]
