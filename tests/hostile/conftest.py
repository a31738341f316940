"""Hypothesis profiles of the hostile-input suite (see budget.py for how tests use them).

`pytest tests/hostile` runs a modest budget; `pytest tests/hostile --hypothesis-profile=deep` runs
every property 25 times longer. The profile is registered here, so name it on a run that includes
this folder as a path argument (pytest loads this file before it reads the option).
"""

from __future__ import annotations

from hypothesis import settings

from .budget import SLOW_DATA

settings.register_profile("hostile", deadline=None, suppress_health_check=SLOW_DATA, print_blob=True)
settings.register_profile("deep", deadline=None, suppress_health_check=SLOW_DATA, print_blob=True)
