"""The pure core: policies, decisions, queues and the outbox, without any I/O.

Nothing here imports asyncio, websockets, redis or socket, reads a clock or touches a
transport (``tests/test_layout.py`` enforces it). Time and the transport's state are
inputs; actions are outputs, which a shell (``_shell/``, or the simulator in
``wsfanout.testing``) performs.
"""
