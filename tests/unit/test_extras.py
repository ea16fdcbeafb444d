"""msglab.extras: its table agrees with pyproject.toml, and a missing driver names its extra."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from msglab import extras
from msglab.brokers import EXTRA_OF
from msglab.errors import MissingExtraError, UsageError
from msglab.lab.probes import EXTRAS as PROBE_EXTRAS

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]


def test_every_extra_of_pyproject_is_known_with_its_drivers() -> None:
    declared = {name for name in OPTIONAL if name not in ("all", "dev")}
    assert set(extras.EXTRAS) == declared
    for name, modules in extras.EXTRAS.items():
        packages = {re.split(r"[\[<>=]", req)[0].replace("-", "_") for req in OPTIONAL[name]}
        assert set(modules) == packages, name


def test_all_is_the_all_extra() -> None:
    (requirement,) = OPTIONAL["all"]
    assert requirement == f"msglab[{','.join(extras.ALL)}]"


def test_transports_and_probes_name_known_extras() -> None:
    named = {e for e in EXTRA_OF.values() if e} | {e for es in PROBE_EXTRAS.values() for e in es}
    assert named <= set(extras.EXTRAS)


def test_require_names_every_missing_extra_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "find_spec", lambda m: None if m in ("pika", "httpx") else m)
    assert extras.missing("kafka", "rabbitmq", "cdc", "rabbitmq") == ["rabbitmq", "cdc"]
    with pytest.raises(MissingExtraError) as err:
        extras.require("kafka", "rabbitmq", "cdc", what="msglab compare")
    assert str(err.value) == (
        "msglab compare needs pika, httpx (not installed): pip install 'msglab[rabbitmq,cdc]'"
    )
    extras.require("kafka", what="nothing missing")


def test_a_failed_driver_import_is_a_usage_error_and_an_import_error() -> None:
    with pytest.raises(MissingExtraError) as err, extras.driver_import("redis", "msglab.x"):
        import msglab_no_such_driver  # type: ignore[import-not-found]  # noqa: F401
    assert isinstance(err.value, UsageError) and isinstance(err.value, ImportError)
    assert err.value.exit_code == 2 and err.value.name == "msglab_no_such_driver"
    assert err.value.extras == ("redis",)
    assert "pip install 'msglab[redis]'" in str(err.value)
