"""The NATS fabric between the controller and the node agents.

* :mod:`~fades.fabric.server`: start and stop an embedded ``nats-server`` (JetStream + MQTT);
* :mod:`~fades.fabric.connect`: connect to it, or to an external NATS (URL + credentials);
* :mod:`~fades.fabric.subjects`: every subject, stream and bucket name;
* :mod:`~fades.fabric.streams`: create the streams and buckets;
* :mod:`~fades.fabric.protocol`: the messages;
* :mod:`~fades.fabric.transfer`: request/reply, and chunked flow-controlled replies;
* :mod:`~fades.fabric.repository`: the function repository (object store).
"""

from fades.fabric.connect import FabricSettings, connect
from fades.fabric.server import EmbeddedNats, free_port, nats_server_binary

__all__ = ["EmbeddedNats", "FabricSettings", "connect", "free_port", "nats_server_binary"]
