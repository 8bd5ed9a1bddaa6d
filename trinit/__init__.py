"""trinit: a guest init daemon for lightweight VMs.

PID 1 inside a Linux guest, serving vminitd's SandboxContext gRPC API (package
com.apple.containerization.sandbox.v3) to the host over vsock, on trio.
"""

__version__ = "0.1.0"

API_PACKAGE = "com.apple.containerization.sandbox.v3"
"""The protobuf package of the SandboxContext API trinit serves (``trinit --version`` prints
it; tests/test_cli_startup.py checks it against the generated descriptor)."""
