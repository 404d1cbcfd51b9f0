"""The asyncio shell on websockets: the hub, its subscribers and their relay tasks.

It performs what the core decides and nothing more: reading the transport's state,
writing frames, waiting, closing. Each rule about the connection is written once, in
the core's contract (``_core/contract.py``), and the fast path inlines it.
"""
