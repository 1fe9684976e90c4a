"""The building-wide CO2 report, gathered from every node's ``co2_summary``.

Input ``summary``: ``{node: summary}`` (a node that did not answer in time is a skipped,
falsy input and is listed in ``missing``). Returns the rooms, the building's mean (weighted by
readings), the worst room, the rooms that spent time over the limit, and which nodes answered.
"""

SKIPPED_KEY = "__fades_skipped__"


def _skipped(v):
    return not v or (isinstance(v, dict) and SKIPPED_KEY in v)


def main(data, params):
    got = data["summary"]
    if isinstance(got, dict) and "rooms" in got:
        got = {"_": got}
    elif _skipped(got):
        got = {}
    rooms, nodes, missing = {}, [], []
    limit = None
    for node, summary in sorted(got.items()):
        if _skipped(summary):
            missing.append(node)
            continue
        nodes.append(node)
        limit = summary.get("limit", limit)
        for room, s in summary["rooms"].items():
            rooms[room] = dict(s, node=node)
    total = sum(r["readings"] for r in rooms.values())
    mean = sum(r["mean"] * r["readings"] for r in rooms.values()) / total if total else None
    worst = max(rooms, key=lambda r: rooms[r]["max"]) if rooms else None
    over = sorted(
        (r for r in rooms if rooms[r]["minutes_over"] > 0), key=lambda r: -rooms[r]["minutes_over"]
    )
    return {
        "rooms": rooms,
        "building_mean": None if mean is None else round(mean, 1),
        "worst_room": worst,
        "over_limit": over,
        "limit": limit,
        "nodes": nodes,
        "missing": missing,
        "complete": not missing,
    }
