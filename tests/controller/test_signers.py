"""An upload signed by a key no node trusts is refused (422 naming the signer and the nodes);
one that some nodes do not trust goes through with a warning naming them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fades.errors import SignerNotTrusted
from fades.functions.artifact import create
from fades.functions.keys import SigningKey, public_pem

from .conftest import CORE_WASM, Bed, held
from .test_api import up


def test_a_signer_no_up_node_trusts_is_refused_and_a_partly_trusted_one_warned(
    bed: Bed, signing_key: SigningKey
) -> None:
    stranger = SigningKey.generate("stranger")
    home = bed.controller_home()  # the controller trusts both keys
    (home / "trusted" / f"{stranger.id}.pub").write_bytes(public_pem(stranger.public))
    bed.start_controller()
    bed.register("north", [held("room1")], trusted=[signing_key.id])
    bed.register("south", [held("room2")], trusted=[signing_key.id])
    bed.register("old", [held("room3")])  # says nothing: not judged
    up(bed, "north", "south", "old")
    with bed.client() as c:
        with pytest.raises(SignerNotTrusted) as err:
            c.upload(create("core", "f", CORE_WASM, key=stranger).to_bytes())
        msg = str(err.value)
        assert stranger.id in msg and "north, south" in msg and "old" not in msg
        assert c.functions() == []  # nothing was stored
        # the controller keeps serving: a trusted upload goes through without warnings
        ok = c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        assert ok["warnings"] == []

    # a node that trusts the stranger comes up: the upload goes through, naming the others
    bed.register("east", [held("room4")], trusted=[signing_key.id, stranger.id])
    up(bed, "east")
    with bed.client() as c:
        info = c.upload(create("core", "g", CORE_WASM, key=stranger).to_bytes())
        assert len(info["warnings"]) == 1
        assert "north, south" in info["warnings"][0] and stranger.id in info["warnings"][0]


def test_a_real_node_lists_the_keys_it_trusts(
    bed: Bed, prepare_home: Any, signing_key: SigningKey
) -> None:
    home: Path = prepare_home("edge")
    bed.start_controller()
    bed.agent("edge", home)
    up(bed, "edge")
    assert bed.controller is not None
    entry = bed.controller.registry.get("edge")
    assert entry is not None and entry.info.trusted_signers == [signing_key.id]
