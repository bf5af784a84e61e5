"""Kernels the project starts itself (`dlcourse check`, the book's build) talk to their
client over IPC: Unix sockets in a private folder, not TCP ports on localhost. Nothing
crosses the network, and ipykernel has no reason to warn "Kernel is running over TCP
without encryption" at every start.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["ipc_kernel_config"]


def ipc_kernel_config(folder) -> "traitlets.config.Config":  # noqa: F821
    """Configuration for nbclient's NotebookClient (config=…): IPC sockets named
    `<folder>/kernel-<n>`. The folder must be absolute (the kernel runs in another working
    directory) and short (a socket path has at most 107 bytes)."""
    from traitlets.config import Config

    folder = Path(folder).resolve()
    if len(str(folder)) > 90:
        raise ValueError(f"{folder} is too long a path for the kernel's sockets (at most 90 characters)")
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(folder / "kernel")
    return config
