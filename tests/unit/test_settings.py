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


#: Workflow defaults that the workflow decides per sample before a settings object is made,
#: and what they decide for the shipped default (the 1 + 3 kV model, trained without denoising):
#: ``fibrecon.samples.resolve_preprocess``.
DECIDED_BY_THE_WORKFLOW = {("preprocess", "denoise"): ("auto", "none")}


@pytest.mark.parametrize("cls", STAGES, ids=lambda c: c.SECTION)
def test_schema_defaults_are_the_settings_defaults(repo, cls):
    schema = load_schema(repo / "schemas" / "config.schema.yaml")["properties"][cls.SECTION]
    props = schema["properties"]
    assert set(props) == {f.name for f in fields(cls)}, cls.SECTION
    assert all("default" in p for p in props.values()), cls.SECTION
    defaults = {k: _plain(v["default"]) for k, v in props.items()}
    for (section, key), (workflow, library) in DECIDED_BY_THE_WORKFLOW.items():
        if section == cls.SECTION:
            assert defaults[key] == workflow
            defaults[key] = library
    assert defaults == {k: _plain(v) for k, v in asdict(cls()).items()}


def test_denoise_auto_follows_the_model_card(repo):
    """denoise: auto gives the shipped 1 + 3 kV model its training's none and the 1 kV model
    its Gaussian filter, with the card's sigma."""
    from fibrecon.modelcard import ModelCard
    from fibrecon.samples import resolve_preprocess

    config = {"denoise": "auto", "denoise_sigma": 3.0}
    for name, want in (("unet_1kV_3kV.pt", "none"), ("unet_1kV.pt", "gaussian")):
        card = ModelCard.read(repo / "resources" / "models" / name).data["preprocess"]
        got = resolve_preprocess(config, "unet", card)
        assert got["denoise"] == want and got["denoise_sigma"] == card["denoise_sigma"], name
        PreprocessParams.from_config(got)  # a settings object the library takes
    assert resolve_preprocess(config, "unet", None)["denoise"] == "none"  # to be trained


@pytest.mark.parametrize("cls", STAGES, ids=lambda c: c.SECTION)
def test_settings_round_trip_through_the_config_and_refuse_unknown_keys(cls):
    settings = cls.from_config(cls().to_config())
    assert settings == cls()
    with pytest.raises(ConfigError, match=f"{cls.SECTION}: unknown setting"):
        cls.from_config({"no_such_key": 1})


def test_the_library_default_is_the_workflow_default():
    """preprocess_stack(stack) in a notebook does what the workflow does for the shipped 1 + 3 kV
    model (denoise: auto decides none for it): no denoising."""
    assert PreprocessParams().denoise == "none"
    assert PreprocessParams.from_record({"percentiles": [2.0, 98.0]}).percentiles == (2.0, 98.0)


def test_simulated_particle_size_default_is_the_schemas(repo):
    from fibrecon.simulate import DEMO_D50_UM

    schema = load_schema(repo / "schemas" / "config.schema.yaml")["properties"]["demo"]
    assert schema["properties"]["d50_um"]["default"] == DEMO_D50_UM
