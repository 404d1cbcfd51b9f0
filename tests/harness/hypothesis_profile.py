"""Settings for every test folder: a pytest plugin (``-p harness.hypothesis_profile``
in pyproject.toml), so it loads before any test module is imported.

hypothesis fixes a test's settings when its module is imported, so a profile loaded by
a folder's conftest reaches only the folders collected after it. Here, first: no
deadline anywhere, since how fast an example runs on a loaded machine is what the
benchmarks measure, not the tests (tests/property/conftest.py then sets its own
example counts on top of this).
"""

from hypothesis import settings

settings.register_profile("suite", deadline=None)
settings.load_profile("suite")
