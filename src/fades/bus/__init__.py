"""The fabric between the controller and the nodes, behind one small protocol.

:class:`~fades.bus.base.Bus` is what the controller, the node agent, the repository (and
later pipelines and checkpoints) use. Implementations: ``NatsBus`` (JetStream, the real one)
and ``MemoryBus`` (in-process, for tests and the simulator). One contract suite runs against
both.
"""

from fades.bus.base import Bus, Delivery, KeyValue, KvEntry, ObjectStore
from fades.bus.memory import MemoryBus, MemoryFabric

__all__ = ["Bus", "Delivery", "KeyValue", "KvEntry", "MemoryBus", "MemoryFabric", "ObjectStore"]
