"""ELA: contract plus a real localization check on a resaved paste."""

from __future__ import annotations

import numpy as np

from forgectl import backends
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
    result = backends.load("ela").localize(image)
    inside = result.heatmap[mask].mean()
    outside = result.heatmap[~mask].mean()
    assert inside > 4 * outside
    assert result.mask[~mask].mean() < 0.01
