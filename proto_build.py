"""How the Python code of the gRPC contract (package benefits.v1) is generated from proto/: the one
place that runs protoc.

The generated code is never committed, so it is made wherever the package is built:
- `pip install .` and `python -m build`: setuptools runs `BuildPyWithProtos` (named in
  pyproject.toml, [tool.setuptools.cmdclass]) and the code is written into the build directory,
  beside the copied sources, never into the source tree;
- an editable install (`make install`, `pip install -e .`) imports from the checkout itself, so
  there the code goes to gen/ (ignored by git) and gen/benefits is mapped as the package;
- `make proto` regenerates gen/ after a .proto file changed: `python proto_build.py gen`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools.command.build_py import build_py

PROJECT_ROOT = Path(__file__).resolve().parent
PROTO_ROOT = PROJECT_ROOT / "proto"
PACKAGE = "benefits"  # the top of `package benefits.v1;`
DEV_OUTPUT = PROJECT_ROOT / "gen"  # where an editable install finds the generated package


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto file of the contract, sorted."""
    files = sorted((proto_root / PACKAGE).rglob("*.proto"))
    if not files:
        raise FileNotFoundError(f"no .proto files below {proto_root / PACKAGE}")
    return files


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Write the messages (`_pb2.py`), their type stubs (`_pb2.pyi`) and the services
    (`_pb2_grpc.py`) of every .proto file into out_dir/benefits, replacing whatever was there;
    returns the files written."""
    from grpc_tools import protoc  # a build requirement only: the server never runs protoc

    package_dir = out_dir / PACKAGE
    shutil.rmtree(package_dir, ignore_errors=True)  # no stale module of a deleted .proto file
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/timestamp.proto and the like
    protos = proto_files(proto_root)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *map(str, protos),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed (exit status {status}) on {len(protos)} files below {proto_root}")
    # regular packages, not namespace ones: benefits.v1 is imported like any other
    for folder in (package_dir, *(p for p in package_dir.rglob("*") if p.is_dir())):
        (folder / "__init__.py").touch()
    return sorted(p for p in package_dir.rglob("*") if p.is_file())


def generated_packages(out_dir: Path) -> list[str]:
    """The dotted names of the packages below out_dir/benefits."""
    return sorted(".".join(init.parent.relative_to(out_dir).parts) for init in (out_dir / PACKAGE).rglob("__init__.py"))


class BuildPyWithProtos(build_py):
    """setuptools' build_py, and then the generated benefits.v1 package (see the module's docstring)."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self.generated: list[Path] = []

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            generate(DEV_OUTPUT)
            self._map_packages(DEV_OUTPUT)
        else:
            self.generated = generate(Path(self.build_lib))

    def _map_packages(self, out_dir: Path) -> None:
        # The editable install's import finder maps the packages the distribution names once the
        # build commands have run, so naming them here makes the first `pip install -e .` of a
        # fresh clone import benefits.v1 from gen/.
        dist = self.distribution
        generated = generated_packages(out_dir)
        dist.packages = [*(p for p in dist.packages or [] if p not in generated), *generated]
        dist.package_dir = {
            **(dist.package_dir or {}),
            PACKAGE: (out_dir / PACKAGE).relative_to(PROJECT_ROOT).as_posix(),
        }

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *map(str, self.generated)]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python proto_build.py OUT_DIR   (writes OUT_DIR/benefits/...)", file=sys.stderr)
        return 2
    written = generate(Path(argv[0]))
    print(f"generated {len(written)} files into {Path(argv[0]) / PACKAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
