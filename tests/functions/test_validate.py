"""The artifact rules (names, manifest size/depth/types, payload vs kind), at parse and verify.

These are the checks that ``fn add``, the store (at add and at load) and the controller's
upload all run, because each of them turns bytes into an artifact with ``parse`` + ``verify``.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import wasmtime

from fades.errors import ArtifactFormatError, ArtifactRejected, SignatureError
from fades.functions.artifact import create, parse
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.validate import MAX_MANIFEST_BYTES, MAX_NAME, check_name

from .forge import CORE_WAT, SOURCE, forged, raw_artifact


@pytest.fixture
def trust(signing_key: SigningKey) -> TrustStore:
    return TrustStore([signing_key.public])


GOOD_NAMES = ["a", "aqi", "mean_core", "room-1.v2", "x" * MAX_NAME, "0day"]
BAD_NAMES = [
    "",
    "a/b",
    "a\\b",
    "../etc",
    "a*",
    "a>",
    "a b",
    "Mean",  # upper case: 'Mean' and 'mean' would be two functions that look alike
    "\u0430qi",  # Cyrillic 'а' (a homoglyph of 'aqi')
    "aqi\u202e",  # right-to-left override
    "aqi\u200b",  # zero-width space
    "a\x1b[31m",
    "a\nb",
    "a..b",
    "a.",
    ".a",
    "-a",
    "x" * (MAX_NAME + 1),
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_a_valid_name_is_accepted_everywhere(
    name: str, signing_key: SigningKey, trust: TrustStore
) -> None:
    art = create("python", name, SOURCE, key=signing_key)
    parse(art.to_bytes()).verify(trust)
    parse(forged(signing_key, name=name)).verify(trust)


@pytest.mark.parametrize("name", BAD_NAMES, ids=ascii)
def test_a_bad_name_is_refused_at_create_and_at_parse_naming_the_rule(
    name: str, signing_key: SigningKey
) -> None:
    with pytest.raises(ArtifactRejected, match=r"'name' .* function name is 1-64 characters"):
        create("python", name, SOURCE, key=signing_key)
    with pytest.raises(ArtifactRejected, match="function name is") as err:
        parse(forged(signing_key, name=name))
    assert err.value.field == "'name'"
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


def test_check_name_refuses_a_non_string() -> None:
    with pytest.raises(ArtifactRejected, match="is a int, not a string"):
        check_name(7)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"created": "yesterday"}, r"'created' is 'yesterday'; it must be an integer"),
        ({"created": 1.5}, r"'created' is a float"),
        ({"created": True}, r"'created' is True; it must be an integer"),
        ({"created": -1}, r"'created' is -1"),
        ({"created_ns": [1]}, r"'created_ns' is a list"),
        ({"description": {"a": 1}}, r"'description' is a dict, not|'description' is a dict"),
        ({"description": "x" * 2000}, r"'description' has 2000 characters"),
        ({"description": "evil\u202etxt"}, r"'description' holds the character U\+202E"),
        ({"entry": "main()"}, r"'entry' is 'main\(\)'; a Python identifier"),
        ({"kind": "shell"}, r"'kind' is 'shell'"),
        ({"abi": "fades-core/1"}, r"'abi' is 'fades-core/1'; python is fades-py/1"),
        ({"payload_sha256": "abc"}, r"'payload_sha256' is 'abc'; 64 hex digits"),
        ({"signer": "../../k"}, r"'signer' is"),
        ({"name": None}, r"lacks 'name'"),
        ({"Evil Key": 1}, r"field name 'Evil Key' is not allowed"),
        ({f"k{i}": i for i in range(40)}, r"has \d+ fields; at most 32"),
    ],
)
def test_a_manifest_field_of_the_wrong_type_or_size_is_refused_naming_it(
    fields: dict[str, object], message: str, signing_key: SigningKey
) -> None:
    with pytest.raises(ArtifactRejected, match=message):
        parse(forged(signing_key, **fields))


def test_a_manifest_that_is_a_json_string_is_refused(signing_key: SigningKey) -> None:
    with pytest.raises(ArtifactRejected, match=r"manifest is a JSON str; it must be an object"):
        parse(raw_artifact(json.dumps("hello").encode(), SOURCE, signing_key))


def test_a_manifest_100000_levels_deep_is_refused_before_it_is_parsed(
    signing_key: SigningKey,
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(
        ArtifactRejected, match=rf"manifest has 200000 bytes; .* {MAX_MANIFEST_BYTES}"
    ):
        parse(raw_artifact(deep, SOURCE, signing_key))


def test_a_deep_manifest_within_the_size_bound_is_refused_too(signing_key: SigningKey) -> None:
    deep = b"[" * 8000 + b"]" * 8000  # 16000 bytes: under the bound, deeper than JSON allows
    with pytest.raises(ArtifactFormatError, match=r"not JSON: nested too deeply|is a JSON list"):
        parse(raw_artifact(deep, SOURCE, signing_key))
    nested = json.dumps({**json.loads(forged_manifest(signing_key)), "x": [[[[1]]]]}).encode()
    with pytest.raises(ArtifactRejected, match="'x' is a list; fields are scalars"):
        parse(raw_artifact(nested, SOURCE, signing_key))


def forged_manifest(key: SigningKey) -> bytes:
    raw = forged(key)
    return raw[20 : 20 + int.from_bytes(raw[12:16], "little")]


@pytest.mark.parametrize(
    "text", [b'{"a": NaN}', b'{"name": "f", "name": "g"}', b"\xff\xfe{}", b"1e999999"]
)
def test_json_that_is_not_plain_json_is_refused(text: bytes, signing_key: SigningKey) -> None:
    with pytest.raises(ArtifactFormatError):
        parse(raw_artifact(text, SOURCE, signing_key))


def test_a_huge_description_is_refused_at_create(signing_key: SigningKey) -> None:
    with pytest.raises(ArtifactRejected, match="'description' has 100000 characters"):
        create("python", "f", SOURCE, key=signing_key, description="x" * 100_000)


def test_binary_garbage_is_refused_as_not_an_artifact() -> None:
    with pytest.raises(ArtifactFormatError, match="bad magic"):
        parse(bytes(range(256)) * 10)


# --- payload vs kind (verify) ---------------------------------------------------------------------
WASM = bytes(wasmtime.wat2wasm(CORE_WAT))
WASI = bytes(
    wasmtime.wat2wasm(
        '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32)'
        " (result i32)))" + CORE_WAT.strip()[len("(module") :]
    )
)
BAD_MEMORY = bytes(
    wasmtime.wat2wasm(
        '(module (func (export "memory")) (memory 1)'
        ' (func (export "fades_alloc") (param i32) (result i32) (i32.const 0))'
        ' (func (export "fades_run") (param i32 i32) (result i32) (i32.const 0)))'
    )
)
WRONG_IMPORT_TYPE = bytes(
    wasmtime.wat2wasm(
        '(module (import "fades" "log" (func (param i64)))' + CORE_WAT.strip()[len("(module") :]
    )
)
NO_EXPORTS = bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1))'))


@pytest.mark.parametrize(
    ("kind", "payload", "message"),
    [
        ("python", WASM, r"payload is WebAssembly; a python artifact carries Python source"),
        ("python", b"def main(d, p):\n    return '\xff'\n", r":2: not UTF-8 text \(byte 0xff"),
        ("python", b"x = 1\ndef main(:\n", r":2: syntax error"),
        ("python", b"def helper():\n    pass\n", r"defines no top-level function 'main'"),
        ("python", b"x = " + b"(" * 100_000 + b")" * 100_000, r":1: syntax error: too many nested"),
        ("python", b"x = " + b"+".join([b"1"] * 100_000), r"nested too deeply"),
        ("python", b"x = 1\0\ndef main(d, p): pass\n", r":1: a NUL byte"),
        ("core", SOURCE, r"payload is not WebAssembly; a core artifact is a core wasm module"),
        ("core", b"\0asm\x01\0\0\0\xff\xff", r"is not a valid WebAssembly module"),
        ("core", WASI, r"imports wasi_snapshot_preview1.fd_write; core modules may import only"),
        ("core", NO_EXPORTS, r"lacks the export\(s\) fades_alloc, fades_run"),
        ("core", BAD_MEMORY, r"exports memory that is not a memory"),
        ("core", WRONG_IMPORT_TYPE, r"imports fades.log with the wrong type"),
        ("runtime", WASM, r"payload is not a wasm component"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 12 else None,
)
def test_a_signed_payload_that_is_not_its_kind_is_refused_at_verify(
    kind: str, payload: bytes, message: str, signing_key: SigningKey, trust: TrustStore
) -> None:
    abi = "fades-core/1" if kind == "core" else "fades-py/1"
    name = "fades-python-runtime" if kind == "runtime" else "f"
    art = parse(forged(signing_key, payload, name=name, kind=kind, abi=abi))
    with pytest.raises(ArtifactRejected, match=message) as err:
        art.verify(trust)
    assert err.value.field == "payload"
    assert len(str(err.value)) < 600


def test_a_valid_core_module_verifies(signing_key: SigningKey, trust: TrustStore) -> None:
    parse(forged(signing_key, WASM, kind="core", abi="fades-core/1")).verify(trust)


def test_the_signature_is_checked_before_the_payload(trust: TrustStore) -> None:
    stranger = SigningKey.generate()
    art = parse(forged(stranger, WASM))  # wasm in a python artifact, signed by a stranger
    with pytest.raises(SignatureError, match="does not trust"):
        art.verify(trust)


def test_mutated_artifacts_fail_only_with_fades_errors(
    signing_key: SigningKey, trust: TrustStore
) -> None:
    """A few thousand random corruptions: each is refused with an ArtifactError, never a crash."""
    import random

    from fades.errors import ArtifactError

    rng = random.Random(16)
    seeds = [
        create("python", "f", SOURCE, key=signing_key).to_bytes(),
        create("core", "c", WASM, key=signing_key).to_bytes(),
        forged(signing_key, WASM, kind="core", abi="fades-core/1"),
    ]
    refused = 0
    for _i in range(3000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            pos = rng.randrange(len(raw))
            if op < 0.6:
                raw[pos] = rng.randrange(256)
            elif op < 0.8:
                del raw[pos : pos + rng.randint(1, 16)]
            else:
                raw[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        try:
            parse(bytes(raw)).verify(trust)
        except ArtifactError:
            refused += 1
    assert refused > 2900, refused  # almost every mutation breaks the signature or the format


def test_mutated_payloads_and_manifests_fail_only_with_a_rejection() -> None:
    """The payload and manifest checks, fed corruptions directly (no signature in the way)."""
    import random

    from fades.functions.validate import check_manifest, check_payload

    rng = random.Random(6)
    good = json.loads(forged_manifest(SigningKey.generate()))
    values: list[object] = [None, True, -1, 2**70, 1.5, "", "x" * 3000, [], {}, "\u202e", "Ab"]
    for _ in range(2000):
        m = dict(good)
        for _ in range(rng.randint(1, 3)):
            m[rng.choice([*good, "zz", "Bad Key"])] = rng.choice(values)
        with contextlib.suppress(ArtifactRejected):
            check_manifest(m)
    for kind, seed in (("core", WASM), ("python", SOURCE), ("runtime", WASM)):
        for _ in range(400):
            raw = bytearray(seed)
            for _ in range(rng.randint(1, 6)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            with contextlib.suppress(ArtifactRejected):
                check_payload(kind, bytes(raw), where="fuzz")
