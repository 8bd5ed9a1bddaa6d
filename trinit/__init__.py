"""trinit: a guest init daemon for lightweight VMs.

PID 1 inside a Linux guest, serving vminitd's SandboxContext gRPC API (package
com.apple.containerization.sandbox.v3) to the host over vsock, on trio.
"""

__version__ = "0.1.0"
