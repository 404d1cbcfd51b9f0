"""hypothesis profiles for the property suite: ``ci`` when ``CI=true``, else ``dev``.

``HYPOTHESIS_PROFILE=ci`` (or ``dev``) picks one explicitly. Examples per test:
``ci`` runs 1000 (the stateful hub test: 250 runs of up to 40 steps), ``dev`` 50 (12).
Neither is derandomized: every run explores new schedules. ``ci`` keeps no example
database and prints a ``@reproduce_failure`` blob with any failure, so a CI failure can
be replayed locally; ``dev`` saves failures in ``.hypothesis/`` and retries them first.
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
