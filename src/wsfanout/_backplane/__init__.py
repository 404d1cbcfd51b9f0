"""Hubs in many processes: the backplane protocol, its pure parts, Redis and workers.

``protocol.py`` is the seam with a hub; ``envelope.py``, ``gaps.py`` and
``publish_buffer.py`` are pure; ``redis.py`` and ``workers.py`` do the I/O.
Exported by ``wsfanout.backplane``.
"""
