"""Policies declared in TOML files, the presets, and routing files.

policy = load_policy("chat")                  # a preset, or a path to a .toml file
routes = load_routes("routes.toml")           # which policy each kind of client gets
await hub.serve(websocket, policy=routes(websocket))

See docs/how-to/policy-files.md; ``wsfanout check`` validates the same files.
"""

from ._files.policy_files import STAGE_KINDS, PolicyFile, dump_policy, parse_policy
from ._files.presets import load_policy, load_policy_file, preset_names, presets
from ._files.routes import Route, Routes, TopicNotAllowed, load_routes, parse_routes
from ._files.units import parse_duration, parse_size
from ._public import publish_names as _publish_names

__all__ = [
    # policy files and presets
    "load_policy",
    "load_policy_file",
    "parse_policy",
    "dump_policy",
    "PolicyFile",
    "preset_names",
    "presets",
    "STAGE_KINDS",
    # routing
    "load_routes",
    "parse_routes",
    "Routes",
    "Route",
    "TopicNotAllowed",
    # values as files write them
    "parse_duration",
    "parse_size",
]

_publish_names(__name__, globals(), __all__)
