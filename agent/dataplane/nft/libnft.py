"""A minimal ctypes binding to libnftables, the library behind the `nft` tool.

Why not `nft -f` per apply: a process per namespace costs ~24 ms on these machines, while a
libnftables context kept open per namespace applies a full table in ~3 ms. Why not the
`nftables` Python module: it ships only with Debian's system Python, not in a virtualenv; its
whole job is these six C calls. Only the dataplane worker process imports this module.
"""

from __future__ import annotations

import ctypes
import ctypes.util

OUTPUT_STATELESS = 1 << 2
OUTPUT_JSON = 1 << 4
OUTPUT_TERSE = 1 << 11


class NftError(Exception):
    """libnftables rejected a command; the message is nft's own error text."""


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    lib = ctypes.CDLL(name)
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.restype = None
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.restype = ctypes.c_int
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.restype = ctypes.c_int
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


_lib: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


class Context:
    """One libnftables context. Its netlink socket belongs to the netns it was first used in."""

    def __init__(self, output_flags: int = 0) -> None:
        lib = _library()
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        self._ctx: int | None = ctx
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if output_flags:
            lib.nft_ctx_output_set_flags(ctx, output_flags)

    def set_output_flags(self, flags: int) -> None:
        if self._ctx is None:
            raise NftError("context is closed")
        _library().nft_ctx_output_set_flags(self._ctx, flags)

    def run(self, commands: str) -> str:
        """Run an `nft -f`-style buffer as one transaction; return nft's output."""
        if self._ctx is None:
            raise NftError("context is closed")
        lib = _library()
        rc = lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        out = lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(err.decode(errors="replace").strip() or f"nft returned {rc}")
        return str(out.decode(errors="replace"))

    def close(self) -> None:
        if self._ctx is not None:
            _library().nft_ctx_free(self._ctx)
            self._ctx = None
