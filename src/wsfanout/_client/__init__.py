"""What a client of a wsfanout server uses: reading offsets and notices, finding gaps.

``tracker.py`` is pure (no I/O, no clock), so any client, connected however it likes,
can follow its streams with it.
"""
