"""Ed25519 signing keys and the set of keys a node trusts.

A key pair is two files: ``NAME.key`` (private, PEM, mode 0600) and ``NAME.pub`` (public,
PEM). A key is named on the wire by its id: the first 16 hex digits of the SHA-256 of its raw
public bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fades.errors import SignatureError

log = logging.getLogger(__name__)


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
    """The public keys whose signatures a node accepts, by key id.

    A store made by :meth:`from_dir` follows its folder: when the folder's listing or
    modification time changes (``fades keys trust`` on a running node, or a key file
    removed), the keys are read again at the next check (:meth:`refresh`, which costs a
    ``stat`` and a listing and runs on every membership test and verification). Keys given
    to the constructor or :meth:`add` stay trusted across reloads. :attr:`version` counts
    the changes, so that a store of artifacts can re-examine what it skipped.
    """

    def __init__(self, keys: list[Ed25519PublicKey] | None = None) -> None:
        self._added: dict[str, Ed25519PublicKey] = {}
        self._from_dir: dict[str, Ed25519PublicKey] = {}
        self._dir: Path | None = None
        self._seen: tuple[int, int, tuple[str, ...]] | None = None
        self._lock = threading.Lock()
        self.version = 0
        #: who holds these keys, as a refusal names it ("this node", "the controller")
        self.holder = "this node"
        for k in keys or []:
            self.add(k)

    @property
    def _keys(self) -> dict[str, Ed25519PublicKey]:
        return {**self._from_dir, **self._added}

    def add(self, key: Ed25519PublicKey) -> str:
        kid = key_id(key)
        with self._lock:
            self._added[kid] = key
            self.version += 1
        return kid

    def add_file(self, path: str | Path) -> str:
        return self.add(load_public(path))

    @classmethod
    def from_dir(cls, directory: str | Path) -> TrustStore:
        """Trust every ``*.pub`` in ``directory`` (a missing directory trusts nobody), and
        follow the directory's changes.

        Raises:
            SignatureError: a ``.pub`` file there is not an Ed25519 public key.
        """
        store = cls()
        store._dir = Path(directory)
        store._reload(strict=True)
        return store

    def _listing(self) -> tuple[int, int, tuple[str, ...]] | None:
        assert self._dir is not None
        try:
            st = self._dir.stat()
            names = tuple(sorted(n for n in os.listdir(self._dir) if n.endswith(".pub")))
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino, names

    def _reload(self, *, strict: bool) -> bool:
        """Read the folder again if it changed; True if it did."""
        with self._lock:
            seen = self._listing()
            if seen == self._seen and (seen is not None or not self._from_dir):
                return False
            keys: dict[str, Ed25519PublicKey] = {}
            assert self._dir is not None
            for name in seen[2] if seen is not None else ():
                try:
                    key = load_public(self._dir / name)
                except SignatureError as exc:
                    if strict:
                        raise
                    log.warning("trusted key file %s ignored: %s", name, exc)
                    continue
                keys[key_id(key)] = key
            changed = keys.keys() != self._from_dir.keys()
            self._seen, self._from_dir = seen, keys
            if changed:
                self.version += 1
                log.info("trusted keys now: %s", ", ".join(sorted(self._keys)) or "none")
            return changed

    def refresh(self) -> bool:
        """Pick up a change to the trusted-keys folder (cheap when there is none).

        Returns whether the set of trusted keys changed.
        """
        return self._dir is not None and self._reload(strict=False)

    def __contains__(self, kid: object) -> bool:
        self.refresh()
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def ids(self) -> list[str]:
        """The trusted key ids, as the folder holds them now (a node's heartbeat reports them)."""
        self.refresh()
        return sorted(self._keys)

    def verify(self, kid: str, signature: bytes, message: bytes, *, what: str) -> None:
        """Check ``signature`` over ``message`` by key ``kid``.

        Raises:
            SignatureError: the key is not trusted or the signature does not match.
        """
        self.refresh()
        key = self._keys.get(kid)
        if key is None:
            raise SignatureError(
                f"{what} is signed by key {kid}, which {self.holder} does not trust "
                f"(trusted: {', '.join(self.ids()) or 'none'})"
            )
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(
                f"{what}: signature does not match its manifest (tampered or corrupt)"
            ) from None
