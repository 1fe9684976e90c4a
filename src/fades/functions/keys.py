"""Ed25519 signing keys and the set of keys a node trusts.

A key pair is two files: ``NAME.key`` (private, PEM, mode 0600) and ``NAME.pub`` (public,
PEM). A key is named on the wire by its id: the first 16 hex digits of the SHA-256 of its raw
public bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fades.errors import SignatureError


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key that signs artifacts."""

    private: Ed25519PrivateKey
    name: str = "key"

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def id(self) -> str:
        return key_id(self.public)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    @classmethod
    def generate(cls, name: str = "key") -> SigningKey:
        return cls(Ed25519PrivateKey.generate(), name)

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``NAME.key`` (0600) and ``NAME.pub`` into ``directory``; refuse to overwrite."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        priv_path, pub_path = d / f"{self.name}.key", d / f"{self.name}.pub"
        for p in (priv_path, pub_path):
            if p.exists():
                raise FileExistsError(f"{p} already exists; refusing to overwrite a key")
        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        pub_path.write_bytes(public_pem(self.public))
        return priv_path, pub_path

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        p = Path(path)
        try:
            key = serialization.load_pem_private_key(p.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise SignatureError(f"cannot load signing key {p}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"{p} is not an Ed25519 private key")
        return cls(key, p.stem)


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public(path: str | Path) -> Ed25519PublicKey:
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"cannot load public key {p}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{p} is not an Ed25519 public key")
    return key


def install_trusted(directory: str | Path, public_key_file: str | Path) -> str:
    """Copy a public key into a node's ``trusted/`` folder as ``<key id>.pub``; returns the id."""
    src = Path(public_key_file)
    kid = key_id(load_public(src))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{kid}.pub").write_bytes(src.read_bytes())
    return kid


class TrustStore:
    """The public keys whose signatures a node accepts, by key id."""

    def __init__(self, keys: list[Ed25519PublicKey] | None = None) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for k in keys or []:
            self.add(k)

    def add(self, key: Ed25519PublicKey) -> str:
        kid = key_id(key)
        self._keys[kid] = key
        return kid

    def add_file(self, path: str | Path) -> str:
        return self.add(load_public(path))

    @classmethod
    def from_dir(cls, directory: str | Path) -> TrustStore:
        """Trust every ``*.pub`` in ``directory`` (a missing directory trusts nobody)."""
        store = cls()
        d = Path(directory)
        if d.is_dir():
            for p in sorted(d.glob("*.pub")):
                store.add_file(p)
        return store

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def ids(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, kid: str, signature: bytes, message: bytes, *, what: str) -> None:
        """Check ``signature`` over ``message`` by key ``kid``.

        Raises:
            SignatureError: the key is not trusted or the signature does not match.
        """
        key = self._keys.get(kid)
        if key is None:
            raise SignatureError(
                f"{what} is signed by key {kid}, which this node does not trust "
                f"(trusted: {', '.join(self.ids()) or 'none'})"
            )
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(
                f"{what}: signature does not match its manifest (tampered or corrupt)"
            ) from None
