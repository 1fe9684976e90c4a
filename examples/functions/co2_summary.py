"""CO2 per room on one node (the scattered stage of the building report).

Dataset ``co2``: the node's CO2 readings over the window. Per room: readings, mean, max, the
last value and the minutes above ``params["limit"]`` ppm (default 1000, a common indoor
guideline), counted from the time between readings.
"""


def main(data, params):
    limit = float(params.get("limit", 1000))
    rooms = {}
    for (room,), ds in data["co2"].split("location").items():
        ts, vals = ds.ts, ds.values
        n = len(vals)
        if n == 0:
            continue
        over_s = 0.0
        for i in range(1, n):
            if vals[i] > limit:
                over_s += ts[i] - ts[i - 1]
        rooms[room] = {
            "readings": n,
            "mean": round(sum(vals) / n, 1),
            "max": max(vals),
            "last": vals[n - 1],
            "minutes_over": round(over_s / 60.0, 1),
            "from": ts[0],
            "to": ts[n - 1],
        }
    return {"rooms": rooms, "limit": limit}
