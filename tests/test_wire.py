"""The FDS1 wire format: the guest SDK's decoder reads back what the host encoder wrote."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fades.broker.base import CATEGORICAL, Dataset
from fades.guest.fades_sdk import decode
from fades.sandbox.wire import encode


def ds(n: int, *, rooms: int = 2, offset: float = 0.0) -> Dataset:
    return Dataset.from_records(
        ts=[1_700_000_000.0 + i for i in range(n)],
        value=[offset + i * 0.5 for i in range(n)],
        sensor_type=["temperature" if i % 2 else "co2" for i in range(n)],
        location=[f"room{i % rooms + 1}" for i in range(n)],
        device=[f"dev{i % 3}" for i in range(n)],
        units={"temperature": "°C", "co2": "ppm"},
    )


def assert_same(decoded: object, original: Dataset) -> None:
    assert len(decoded) == len(original)  # type: ignore[arg-type]
    assert list(decoded.ts) == original.ts.tolist()  # type: ignore[attr-defined]
    assert list(decoded.values) == original.value.tolist()  # type: ignore[attr-defined]
    for c in CATEGORICAL:
        assert list(decoded.codes(c)) == original.codes[c].tolist()  # type: ignore[attr-defined]
        assert decoded.labels[c] == original.labels[c]  # type: ignore[attr-defined]
        assert decoded.column(c) == original.column(c)  # type: ignore[attr-defined]
    assert decoded.units == original.units  # type: ignore[attr-defined]


def test_one_dataset_round_trips_with_labels_and_units() -> None:
    original = ds(10)
    datasets, params = decode(encode({"temps": original}))
    assert list(datasets) == ["temps"]
    assert params == {}
    assert datasets["temps"].name == "temps"
    assert_same(datasets["temps"], original)


def test_params_round_trip() -> None:
    params = {"votes": 2, "thresholds": {"co2": 650.5}, "rooms": ["a", "b"], "flag": None}
    _, got = decode(encode({"x": ds(3)}, params))
    assert got == params


def test_several_datasets_keep_their_names_order_and_columns() -> None:
    originals = {"a": ds(5), "b": ds(0), "c": ds(17, rooms=4, offset=100.0)}
    datasets, _ = decode(encode(originals, {"k": 1}))
    assert list(datasets) == ["a", "b", "c"]
    for name, original in originals.items():
        assert_same(datasets[name], original)


def test_an_empty_dataset_round_trips() -> None:
    datasets, params = decode(encode({"nothing": Dataset.empty()}, {"p": 1}))
    assert len(datasets["nothing"]) == 0
    assert list(datasets["nothing"].values) == []
    assert datasets["nothing"].labels == {c: [] for c in CATEGORICAL}
    assert params == {"p": 1}


def test_no_datasets_at_all_round_trips() -> None:
    datasets, params = decode(encode({}, {"only": "params"}))
    assert datasets == {}
    assert params == {"only": "params"}


def test_columns_are_eight_byte_aligned_views_not_copies() -> None:
    blob = encode({"a": ds(3), "b": ds(5)})
    datasets, _ = decode(blob)
    assert isinstance(datasets["a"].values, memoryview)
    # the decoder reads straight from the blob: changing the blob changes the view
    entry = struct.unpack_from("<IIIIII", blob, 24)
    assert all(off % 8 == 0 for off in entry[1:])
    struct.pack_into("<d", blob, entry[2], 42.0)
    assert datasets["a"].values[0] == 42.0


def test_split_groups_readings_by_categorical_columns() -> None:
    datasets, _ = decode(encode({"a": ds(8)}))
    groups = datasets["a"].split("location", "sensor_type")
    assert set(groups) == {("room1", "co2"), ("room2", "temperature")}
    assert list(groups[("room1", "co2")].values) == [0.0, 1.0, 2.0, 3.0]


def test_the_decoder_refuses_what_is_not_fds1() -> None:
    with pytest.raises(ValueError, match="too short"):
        decode(b"FDS1")
    with pytest.raises(ValueError, match="not an FDS1"):
        decode(b"XXXX" + bytes(40))


names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
labels = st.sampled_from(["room1", "room2", "é-room", "r3"])
finite = st.floats(allow_nan=False, allow_infinity=True, width=64)


@st.composite
def datasets_st(draw: st.DrawFn) -> Dataset:
    n = draw(st.integers(0, 40))
    return Dataset.from_records(
        ts=draw(st.lists(finite, min_size=n, max_size=n)),
        value=draw(st.lists(st.floats(width=64, allow_nan=False), min_size=n, max_size=n)),
        sensor_type=draw(st.lists(st.sampled_from(["co2", "light"]), min_size=n, max_size=n)),
        location=draw(st.lists(labels, min_size=n, max_size=n)),
        device=draw(st.lists(names, min_size=n, max_size=n)),
        units=draw(st.dictionaries(names, names, max_size=2)),
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    data=st.dictionaries(names, datasets_st(), max_size=4),
    params=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)
def test_decode_inverts_encode_for_any_datasets_and_params(
    data: dict[str, Dataset], params: dict[str, object]
) -> None:
    datasets, got = decode(encode(data, params))
    assert got == params
    assert list(datasets) == list(data)
    for name, original in data.items():
        assert_same(datasets[name], original)
        assert np.array_equal(np.asarray(datasets[name].values), original.value)
