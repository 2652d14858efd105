"""The Redis broker's server-side Lua scripts, read from the ``.lua`` files shipped beside this module.

Kept as files so they are read (and linted) as Lua, not as Python strings;
``importlib.resources`` finds them in a checkout and in an installed wheel alike.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Literal

__all__ = ["ScriptName", "lua_source"]

ScriptName = Literal["publish_batch", "acquire_lease", "release_lease", "heartbeat"]


@functools.cache
def lua_source(name: ScriptName) -> str:
    """The text of ``<name>.lua`` (read once per process)."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
