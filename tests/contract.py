"""The contract every backend honours. Subclass ``BackendContract`` with ``method = "name"``.

``tests/test_contract.py`` also runs these checks on every registry entry, so a method cannot
be registered without passing them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgectl import backends
from forgectl.intake import ForensicImage, image_from_array
from tests.conftest import natural_image


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
        return backends.load(cls.method)

    def test_spec_matches_registry_name(self, backend):
        assert backend.spec.name == self.method
        assert backend.spec.kind in ("classical", "learned")

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

    def test_deterministic(self, backend):
        image = image_from_array(natural_image(64, 64, seed=4), jpeg_quality=90)
        a, b = backend.localize(image), backend.localize(image)
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
        assert a.score == b.score
