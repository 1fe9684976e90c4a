"""Min, max, mean and count per location and sensor type (the seeds' evaluation function)."""


def main(data, params):
    stats = {}
    for ds in data.values():
        loc_labels, st_labels = ds.labels["location"], ds.labels["sensor_type"]
        acc = {}
        for loc, st, v in zip(ds.codes("location"), ds.codes("sensor_type"), ds.values):
            a = acc.get((loc, st))
            if a is None:
                acc[(loc, st)] = [v, v, v, 1]
            else:
                if v < a[0]:
                    a[0] = v
                if v > a[1]:
                    a[1] = v
                a[2] += v
                a[3] += 1
        for (loc, st), (lo, hi, total, n) in acc.items():
            stats.setdefault(loc_labels[loc], {})[st_labels[st]] = {
                "min": lo,
                "max": hi,
                "mean": total / n,
                "count": n,
            }
    return stats
