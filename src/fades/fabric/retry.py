"""Start-up steps on a fabric that may not answer yet (a hub server restarting, JetStream
electing its leaders) are tried again for a while: :func:`retrying`, the asynchronous face of
the one backoff loop in :mod:`fades.retry`."""

from __future__ import annotations

from fades.retry import START_RETRY_S, retrying, retrying_sync

__all__ = ["START_RETRY_S", "retrying", "retrying_sync"]
