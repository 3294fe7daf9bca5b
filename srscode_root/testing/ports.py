"""A free TCP port for a launcher's rendezvous.

``accelerate launch`` defaults to port 29500; two launches at once on one host (pytest-xdist
workers, a benchmark beside a test) would then meet at the same store and abort each other.
"""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS reports free now (another process may still take it before use: the
    launcher then fails at once with "address already in use", never joins a stranger)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
