"""What tests in several folders share: free ports and a real redis-server.

A package on the test path (``pythonpath`` in pyproject.toml), imported as
``harness``; it holds no tests.
"""
