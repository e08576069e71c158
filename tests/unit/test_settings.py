"""One settings object per stage: the schema's defaults are the dataclasses' defaults."""

from dataclasses import asdict, fields

import pytest

from fibrecon.align import AlignSettings
from fibrecon.metrics import MetricsSettings
from fibrecon.preprocess import PreprocessParams
from fibrecon.samples import ConfigError, load_schema
from fibrecon.segment import SegmentSettings
from fibrecon.training import TrainSettings
from fibrecon.uncertainty import AnnotateSettings
from fibrecon.volume import VolumeSettings

STAGES = [AlignSettings, PreprocessParams, SegmentSettings, VolumeSettings, MetricsSettings,
          TrainSettings, AnnotateSettings]


def _plain(value):
    """Tuples as lists, integers as floats where a number: schema YAML and Python agree."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    return float(value)


@pytest.mark.parametrize("cls", STAGES, ids=lambda c: c.SECTION)
def test_schema_defaults_are_the_settings_defaults(repo, cls):
    schema = load_schema(repo / "schemas" / "config.schema.yaml")["properties"][cls.SECTION]
    props = schema["properties"]
    assert set(props) == {f.name for f in fields(cls)}, cls.SECTION
    assert all("default" in p for p in props.values()), cls.SECTION
    assert {k: _plain(v["default"]) for k, v in props.items()} == \
        {k: _plain(v) for k, v in asdict(cls()).items()}


@pytest.mark.parametrize("cls", STAGES, ids=lambda c: c.SECTION)
def test_settings_round_trip_through_the_config_and_refuse_unknown_keys(cls):
    settings = cls.from_config(cls().to_config())
    assert settings == cls()
    with pytest.raises(ConfigError, match=f"{cls.SECTION}: unknown setting"):
        cls.from_config({"no_such_key": 1})


def test_the_library_default_is_the_workflow_default():
    """preprocess_stack(stack) in a notebook does what the workflow does: no denoising."""
    assert PreprocessParams().denoise == "none"
    assert PreprocessParams.from_record({"percentiles": [2.0, 98.0]}).percentiles == (2.0, 98.0)


def test_simulated_particle_size_default_is_the_schemas(repo):
    from fibrecon.simulate import DEMO_D50_UM

    schema = load_schema(repo / "schemas" / "config.schema.yaml")["properties"]["demo"]
    assert schema["properties"]["d50_um"]["default"] == DEMO_D50_UM
