"""Every subject, stream and bucket name of the fabric, in one place.

Controller and node agents agree on these and nothing else::

    fades.task.<node>           stream FADES_TASKS: tasks for a node (durable, deduplicated by id)
    fades.result.<node>         stream FADES_RESULTS: results from a node (at least once)
    fades.node.<node>.query     request/reply: remote retrieval through the node's broker
    fades.node.<node>.ping      request/reply: liveness probe
    fades.node.<node>.control   request/reply: operations on the node's tasks (cancel)
    KV  fades_nodes             node registry: one key per node, re-put on every heartbeat
    KV  fades_functions         function index: d.<hex> -> record, n.<name> -> digest,
                                r.<abi> -> runtime digest
    OBJ fades_artifacts         signed artifacts, split into parts <hex>.<i> of <= PART_SIZE
    sensors.<node>.<location>.<sensor_type>
                                MQTT topic sensors/<node>/<location>/<sensor_type>
"""

from __future__ import annotations

import re

from fades.errors import FabricError

TASKS_STREAM = "FADES_TASKS"
RESULTS_STREAM = "FADES_RESULTS"
NODES_BUCKET = "fades_nodes"
FUNCTIONS_BUCKET = "fades_functions"
ARTIFACTS_BUCKET = "fades_artifacts"
SENSORS_PREFIX = "sensors"

#: parts of an artifact in the object store (object gets stall from about 3 MiB up)
PART_SIZE = 1024 * 1024

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_token(value: str, what: str = "node name") -> str:
    """A name used as one subject token or key: letters, digits, ``_`` and ``-``."""
    if not _TOKEN.match(value):
        raise FabricError(
            f"{what} {value!r} is not valid: use 1-64 letters, digits, '_' or '-' "
            "(it becomes a NATS subject token)"
        )
    return value


def task_subject(node: str) -> str:
    return f"fades.task.{check_token(node)}"


def result_subject(node: str) -> str:
    return f"fades.result.{check_token(node)}"


def query_subject(node: str) -> str:
    return f"fades.node.{check_token(node)}.query"


def ping_subject(node: str) -> str:
    return f"fades.node.{check_token(node)}.ping"


def control_subject(node: str) -> str:
    return f"fades.node.{check_token(node)}.control"


def sensor_topic(node: str, location: str, sensor_type: str) -> str:
    """The MQTT topic a sensor publishes to (the gateway maps ``/`` to ``.``)."""
    return f"{SENSORS_PREFIX}/{check_token(node)}/{location}/{sensor_type}"
