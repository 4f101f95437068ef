"""The study both distributed benchmarks run: one round of the built-in `sleep` objective."""

from __future__ import annotations

from collections.abc import Mapping

from zoomtune.common.study import StudySpec


def sleep_study(name: str, trials: int, duration: float, resources: Mapping[str, str]) -> StudySpec:
    """One round of `trials` trials that each sleep `duration` seconds, on one float `x`."""
    resource_lines = "\n".join(f'{key} = "{value}"' for key, value in resources.items())
    return StudySpec.from_toml(
        f"""
[study]
name = "{name}"
direction = "minimize"
[objective]
name = "sleep"
options = {{ duration = {duration} }}
[search]
sampler = "random"
rounds = 1
trials_per_round = {trials}
[resources]
{resource_lines}
[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"""
    )
