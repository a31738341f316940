"""How many examples each property gets: modest by default, 25 times more with `--hypothesis-profile=deep`."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

DEEP_FACTOR = 25
SLOW_DATA = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example, HealthCheck.filter_too_much]


def budget(examples: int) -> settings:
    """Settings for one property: `examples` normally, DEEP_FACTOR times that under the `deep` profile.

    Called when a test module is imported, which is after pytest has loaded the profile.
    """
    deep = settings.get_current_profile_name() == "deep"
    return settings(
        max_examples=examples * DEEP_FACTOR if deep else examples,
        deadline=None,
        suppress_health_check=SLOW_DATA,
        print_blob=True,
    )
