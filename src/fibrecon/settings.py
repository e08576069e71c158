"""Stage settings: one frozen, keyword-only dataclass per stage, the one place its defaults live.

Each stage module defines its settings class on :class:`StageSettings`
(:class:`fibrecon.align.AlignSettings`, :class:`fibrecon.preprocess.PreprocessParams`,
:class:`fibrecon.segment.SegmentSettings`, :class:`fibrecon.volume.VolumeSettings`,
:class:`fibrecon.metrics.MetricsSettings`, :class:`fibrecon.training.TrainSettings`).
A test asserts that the config schema's defaults (``schemas/config.schema.yaml``)
equal the classes' defaults, key for key, so that a notebook calling the library
does what the workflow does.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import ClassVar

__all__ = ["StageSettings"]


class StageSettings:
    """Mixin of the stage settings dataclasses: read from and written back to a config section."""

    #: Name of the config section (``align``, ``preprocess``, ...).
    SECTION: ClassVar[str] = ""

    @classmethod
    def from_config(cls, section: dict | None = None):
        """From a config section; unknown keys are refused by name, missing ones take defaults.

        Raises
        ------
        fibrecon.samples.ConfigError
            Naming the section and the unknown keys.
        """
        from fibrecon.samples import ConfigError

        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"{cls.SECTION}: unknown setting(s) {unknown}; known: "
                              f"{sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) and _is_tuple(cls, k) else v
                      for k, v in section.items()})

    def to_config(self) -> dict:
        """The settings as a config section (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _is_tuple(cls, name: str) -> bool:
    """Whether the field's default is a tuple (config lists become tuples there)."""
    f = next(f for f in fields(cls) if f.name == name)
    return isinstance(f.default, tuple)
