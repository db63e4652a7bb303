"""Every registered method passes the backend contract (nothing registered that does not work),
declares its options, and the CLI start stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forgectl import registry
from forgectl.backends.options import Option
from forgectl.errors import UsageError
from forgectl.intake import image_from_array
from forgectl.weights import weights_dir
from tests.contract import check_result
from tests.helpers import natural_image


@pytest.mark.parametrize("name", registry.available())
def test_registered_method_honours_contract(name):
    backend = registry.load(name)
    assert backend.spec.name == name
    check_result(backend, image_from_array(natural_image(72, 104, seed=5), jpeg_quality=80))
    check_result(backend, image_from_array(natural_image(53, 61, seed=6)))


@pytest.mark.parametrize("entry", registry.entries(), ids=lambda e: e.name)
def test_entry_is_consistent(entry):
    if entry.backend is not None:
        spec = registry.get_spec(entry.name)
        assert spec.name == entry.name
        if entry.status == "ready" and spec.weights:
            assert (weights_dir() / spec.weights).is_file(), "ready but weights not shipped"
        if spec.kind == "learned":
            assert entry.recipe is not None, "a learned method names its recipe"
    if entry.recipe is not None:
        recipe = registry.load_recipe(entry.name)
        assert recipe.name == entry.name
        assert "tiny" in recipe.configs or any(c.startswith("tiny") for c in recipe.configs)


def test_methods_and_help_never_load_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from forgectl.cli import app\n"
        "r = CliRunner().invoke(app, ['methods', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['methods', 'omni'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_unknown_method_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown method"):
        registry.load("no-such-method")


def _bad_value(opt: Option) -> object:
    """A value of the wrong kind or out of range for ``opt``."""
    if opt.choices:
        return "no-such-choice"
    if isinstance(opt.default, bool):
        return "maybe"
    if isinstance(opt.default, int | float):
        return "abc" if opt.minimum is None else opt.minimum - 1
    if isinstance(opt.default, tuple):
        return ["abc"] if not isinstance(opt.default[0], str) else []
    return None  # a free string: any text is valid


@pytest.mark.parametrize("name", registry.available())
def test_option_typos_and_bad_values_are_usage_errors(name):
    cls = registry.get_class(name)
    valid = [o.name for o in cls.OPTIONS]
    with pytest.raises(UsageError, match="has no option 'tiel'") as err:
        registry.load(name, tiel=512)
    for option in valid:
        assert option in str(err.value)
    for opt in cls.OPTIONS:
        bad = _bad_value(opt)
        if bad is None:
            continue
        with pytest.raises(UsageError, match=opt.name):
            registry.load(name, **{opt.name: bad})


def test_options_are_listed_by_methods_name(cli):
    result = cli(["methods", "omni", "--json"])
    assert result.exit_code == 0
    import json

    names = [o["name"] for o in json.loads(result.output)["options"]]
    assert names == [o.name for o in registry.get_class("omni").OPTIONS]
