"""Whether the nodes that are up would run a function signed by a given key.

Each node lists the key ids it trusts in its registry entry (``NodeInfo.trusted_signers``;
``None`` from a node that does not say, which is not judged). At upload:

- no up node says what it trusts: nothing to check;
- none of the up nodes that say trusts the signer: the upload is refused
  (``SignerNotTrusted``, HTTP 422) naming the signer and the nodes; every task would fail;
- some do not: the upload goes through with a warning naming them (``FunctionInfo.warnings``).
"""

from __future__ import annotations

from collections.abc import Iterable

from fades.errors import SignerNotTrusted
from fades.fabric.protocol import NodeInfo


def check_signer(signer: str | None, nodes: Iterable[NodeInfo]) -> list[str]:
    """Warnings for an upload signed by ``signer`` given the up ``nodes``.

    Raises:
        SignerNotTrusted: at least one up node lists its trusted keys and none trusts it.
    """
    reporting = [n for n in nodes if n.trusted_signers is not None]
    if signer is None or not reporting:
        return []
    refusing = sorted(n.name for n in reporting if signer not in (n.trusted_signers or []))
    if len(refusing) == len(reporting):
        raise SignerNotTrusted(
            f"upload refused: no node that is up trusts signer {signer!r} (nodes: "
            f"{', '.join(refusing)}), so every task would fail there; trust the public key on "
            "a node first (fades keys trust KEY.pub)",
            signer=signer,
            nodes=refusing,
        )
    if refusing:
        return [
            f"nodes {', '.join(refusing)} do not trust signer {signer!r}: they refuse this "
            "function's tasks"
        ]
    return []
