"""hypothesis profiles for the property suite: ``ci`` when ``CI=true``, else ``dev``.

``HYPOTHESIS_PROFILE=ci`` (or ``dev``) picks one explicitly. Examples per test:
``ci`` runs 1000 (the stateful hub test: 250 runs of up to 40 steps), ``dev`` 50 (12).
Both are deterministic per hypothesis version only in CI (``derandomize``), so CI
failures reproduce; locally each run explores new examples and keeps failures in the
example database.
"""

import os

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 1000
DEV_EXAMPLES = 50

settings.register_profile(
    "ci",
    max_examples=CI_EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=DEV_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)
