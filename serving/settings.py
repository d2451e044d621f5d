"""The service's settings, read from environment variables when the service is constructed (never at import).

    OBJREMOVAL_MAX_PIXELS       larger images are refused with 413 before decoding   (default 40_000_000)
    OBJREMOVAL_MAX_BODY_BYTES   larger request bodies are refused with 413 while read (default 32 MiB)
    OBJREMOVAL_API_TOKEN        when set, /remove, /segment and /info need `Authorization: Bearer <token>`
    OBJREMOVAL_THREADS          inference slots per worker; other requests wait       (default 1)
    OBJREMOVAL_BODY_TIMEOUT     seconds to send a whole body, then 408                (default 60)
    OBJREMOVAL_MIN_BODY_RATE    bytes/s a body must average after its first second    (default 16384)
    OBJREMOVAL_QUEUE_TIMEOUT    seconds a read request waits for a slot, then 503     (default 30)
    OBJREMOVAL_MAX_QUEUE        requests that may wait at once (each holds its body)  (default 64)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from components.images import DEFAULT_MAX_PIXELS

MAX_EXPAND = 64  # |expand| limit in pixels: dilation beyond this is a different request, not a margin


@dataclass(frozen=True)
class Settings:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_body_bytes: int = 32 * 2**20
    api_token: str | None = field(default=None, repr=False)  # never in logs
    threads: int = 1
    max_expand: int = MAX_EXPAND
    body_timeout: int = 60
    min_body_rate: int = 16384
    queue_timeout: int = 30
    max_queue: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `environ` (default: os.environ); a bad value raises ValueError naming the variable."""
        env = os.environ if environ is None else environ
        token = env.get("OBJREMOVAL_API_TOKEN") or None
        return cls(max_pixels=_positive(env, "OBJREMOVAL_MAX_PIXELS", cls.max_pixels),
                   max_body_bytes=_positive(env, "OBJREMOVAL_MAX_BODY_BYTES", cls.max_body_bytes),
                   api_token=token, threads=_positive(env, "OBJREMOVAL_THREADS", cls.threads),
                   body_timeout=_positive(env, "OBJREMOVAL_BODY_TIMEOUT", cls.body_timeout),
                   min_body_rate=_positive(env, "OBJREMOVAL_MIN_BODY_RATE", cls.min_body_rate),
                   queue_timeout=_positive(env, "OBJREMOVAL_QUEUE_TIMEOUT", cls.queue_timeout),
                   max_queue=_positive(env, "OBJREMOVAL_MAX_QUEUE", cls.max_queue))


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a positive integer, got {env[name]!r}")
    return int(raw)
