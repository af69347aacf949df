"""The gRPC code generated from gantry's proto when the package was built (see setup.py)."""

try:
    from . import gantry_pb2 as pb
    from . import gantry_pb2_grpc as pb_grpc
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "gantry_client's gRPC stubs (gantry_pb2.py, gantry_pb2_grpc.py) are missing: they are "
        "generated when the package is built, so install it (pip install ./clients/python, or "
        "deploy/bootstrap.sh) rather than importing it from the source tree"
    ) from error

__all__ = ["pb", "pb_grpc"]
