"""Builds gantry-client: the package's gRPC stubs are generated from gantry's proto/ here.

Everything else about the package is in pyproject.toml. The stubs are never committed: build_py
runs grpcio-tools' protoc on ../../proto/gantry/v1/gantry.proto (or, in an sdist, on the copy the
sdist carries) and writes `gantry_client/gantry_pb2.py`, `gantry_pb2.pyi` and
`gantry_pb2_grpc.py` next to the package's own modules.

The proto is compiled as `gantry_client/gantry.proto` (a copy in a temporary folder), so the
generated modules import each other as `gantry_client.gantry_pb2` and no top-level `gantry`
package is needed; the messages and services keep their wire names (`gantry.v1.JobService`).
"""

import pathlib
import shutil
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = pathlib.Path(__file__).resolve().parent
# The contract in the repository, and where an sdist keeps its copy.
REPO_PROTO = HERE.parent.parent / "proto" / "gantry" / "v1" / "gantry.proto"
SDIST_PROTO = pathlib.Path("proto") / "gantry" / "v1" / "gantry.proto"
PACKAGE = "gantry_client"


def find_proto():
    """The proto to compile: the sdist's copy in an sdist, else the repository's."""
    for candidate in (HERE / SDIST_PROTO, REPO_PROTO):
        if candidate.is_file():
            return candidate
    raise SystemExit(
        f"gantry-client: cannot find gantry.proto at {REPO_PROTO} or {HERE / SDIST_PROTO}: "
        "build the package from gantry's repository (pip install ./clients/python)"
    )


def generate_stubs(out_dir):
    """Runs grpcio-tools' protoc on the proto; the modules land in `out_dir/gantry_client/`."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit(
            "gantry-client: grpcio-tools is needed to build the package (pip install grpcio-tools==1.85.1, "
            "or build with build isolation so pip installs it)"
        ) from None
    proto = find_proto()
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        staged = pathlib.Path(tmp) / PACKAGE / "gantry.proto"
        staged.parent.mkdir()
        shutil.copyfile(proto, staged)
        out = pathlib.Path(out_dir)
        (out / PACKAGE).mkdir(parents=True, exist_ok=True)
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{tmp}",
                f"-I{include}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                str(staged.relative_to(tmp)),
            ]
        )
    if status != 0:
        raise SystemExit(f"gantry-client: protoc failed on {proto}")


class BuildPyWithStubs(build_py):
    """build_py that also generates the gRPC stubs into the build (or, for an editable install,
    into src/, where .gitignore keeps them out of commits)."""

    def run(self):
        if not getattr(self, "editable_mode", False):
            # An in-tree build (pip install ./clients/python) reuses build/: drop what an earlier
            # build left there, so a module removed from src/ does not linger in the wheel.
            shutil.rmtree(pathlib.Path(self.build_lib) / PACKAGE, ignore_errors=True)
        super().run()
        if getattr(self, "editable_mode", False):
            generate_stubs(HERE / "src")
        else:
            generate_stubs(self.build_lib)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            package = pathlib.Path(self.build_lib) / PACKAGE
            outputs += [str(package / name) for name in ("gantry_pb2.py", "gantry_pb2.pyi", "gantry_pb2_grpc.py")]
        return outputs


class SdistWithProto(sdist):
    """sdist that carries the proto, so the sdist builds away from the repository."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        target = pathlib.Path(base_dir) / SDIST_PROTO
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(find_proto(), target)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProto})
