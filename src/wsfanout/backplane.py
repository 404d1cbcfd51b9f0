"""Scale out past one process: hubs in many processes share messages through Redis.

async with RedisBackplane("redis://127.0.0.1:6379/0") as backplane:
    hub = Hub(backplane=backplane)
    ...
    hub.publish(message)   # reaches the subscribers of every hub on that Redis

``RedisBackplane`` needs the ``redis`` extra (``pip install 'wsfanout[redis]'``);
importing this module does not. See docs/how-to/redis.md.
"""

from ._backplane.protocol import Backplane, Inbound, Recovered
from ._backplane.redis import DEFAULT_BUFFER, BackplaneHealth, RedisBackplane
from ._backplane.workers import Handler, WorkerPool, run_workers, subscribe_all
from ._public import publish_names as _publish_names

__all__ = [
    "Backplane",
    "Inbound",
    "Recovered",
    "RedisBackplane",
    "BackplaneHealth",
    "DEFAULT_BUFFER",
    # several processes on one port
    "run_workers",
    "WorkerPool",
    "Handler",
    "subscribe_all",
]

_publish_names(__name__, globals(), __all__)
