"""The fabric between the controller and the node agents (used through :mod:`fades.bus`).

* :mod:`~fades.fabric.server`: start and stop an embedded ``nats-server`` (JetStream + MQTT);
* :mod:`~fades.fabric.connect`: connect to it, or to an external NATS (URL + credentials);
* :mod:`~fades.fabric.subjects`: every subject, stream and bucket name;
* :mod:`~fades.fabric.streams`: create the streams and buckets (on a Bus);
* :mod:`~fades.fabric.protocol`: the messages (results are :class:`fades.outcome.Outcome`);
* :mod:`~fades.fabric.transfer`: NATS request/reply with chunked flow-controlled replies
  (what :class:`fades.bus.nats.NatsBus` uses);
* :mod:`~fades.fabric.repository`: the function repository (object store + KV on a Bus);
* :mod:`~fades.fabric.sync`: the one artifact download into a verifying function store.
"""

from fades.fabric.connect import FabricSettings, connect
from fades.fabric.server import EmbeddedNats, free_port, nats_server_binary

__all__ = ["EmbeddedNats", "FabricSettings", "connect", "free_port", "nats_server_binary"]
