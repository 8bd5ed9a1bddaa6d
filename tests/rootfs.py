"""Test-side names for the busybox rootfs helpers (they live in trinit.host)."""

from trinit.host._rootfs import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    READONLY_PATHS,
    build_busybox_rootfs,
)
from trinit.host._rootfs import busybox_spec as test_spec

test_spec.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test

__all__ = [
    "DEFAULT_CAPABILITIES",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "build_busybox_rootfs",
    "test_spec",
]
