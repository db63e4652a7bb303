"""ELA: contract plus a real localization check on a resaved paste."""

from __future__ import annotations

import numpy as np
import pytest

from forgectl import registry
from forgectl.errors import UsageError
from forgectl.intake import encode_jpeg, image_from_bytes
from tests.contract import BackendContract


class TestElaContract(BackendContract):
    method = "ela"


def test_ela_flags_region_compressed_fewer_times(make_image):
    import cv2

    host = make_image(256, 320, seed=11)
    # Host went through heavy compression twice; the pasted patch is pristine.
    for q in (60, 65):
        host = cv2.imdecode(np.frombuffer(encode_jpeg(host, q), np.uint8), 1)[:, :, ::-1]
    donor = make_image(256, 320, seed=12)
    mask = np.zeros(host.shape[:2], bool)
    mask[80:176, 120:232] = True
    forged = host.copy()
    forged[mask] = donor[mask]
    image = image_from_bytes(encode_jpeg(forged, 95))
    result = registry.load("ela").localize(image)
    inside = result.heatmap[mask].mean()
    outside = result.heatmap[~mask].mean()
    assert inside > 4 * outside
    assert result.mask[~mask].mean() < 0.01


def test_options_are_declared_and_coerced():
    assert registry.load("ela").options == {"quality": 90, "ratio": 4.0}
    ela = registry.load("ela", quality="75", ratio=2)
    assert ela.options == {"quality": 75, "ratio": 2.0}
    assert isinstance(ela.options["ratio"], float)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(UsageError, match=r"no option 'qualty'.*quality"):
        registry.load("ela", qualty=80)


@pytest.mark.parametrize(
    "options", [{"quality": 0}, {"quality": 101}, {"quality": 90.5}, {"quality": "high"},
                {"ratio": 1.0}, {"ratio": 0.5}, {"ratio": "big"}]
)
def test_bad_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        registry.load("ela", **options)
