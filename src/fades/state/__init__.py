"""Stateful functions: checkpoints, their stores and fencing (see docs/state.md).

- :mod:`fades.state.base`: :class:`Checkpoint`, :class:`Lease`, the :class:`Checkpoints` store
  interface;
- :mod:`fades.state.seal`: the sealed (HMAC) checkpoint record and its key;
- :mod:`fades.state.local`: SQLite in the node's folder; :mod:`fades.state.kv`: the fabric's
  ``fades_state`` bucket;
- :mod:`fades.state.keeper`: one stateful task's side of it (claim, restore, save, release).
"""

from fades.state.base import Checkpoint, Checkpoints, Lease

__all__ = ["Checkpoint", "Checkpoints", "Lease"]
