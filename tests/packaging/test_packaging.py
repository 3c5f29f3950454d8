"""The wheel installs only namespaced packages, and the committed gRPC code matches the .proto."""

import filecmp
import subprocess
import sys
import zipfile

import pytest

from support import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        timeout=300,
    )
    return next(out.glob("aelstm-*.whl"))


def test_wheel_holds_only_the_aelstm_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"aelstm", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for package in ("core", "training", "server", "client", "v1"):
        assert f"aelstm/{package}/__init__.py" in names
    assert "aelstm/v1/scoring.proto" in names


def test_installed_wheel_imports_from_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    code = (
        "import aelstm.core.bundle, aelstm.server, aelstm.client, aelstm.v1.scoring_pb2_grpc as g, sys;"
        "assert aelstm.core.bundle.__file__.startswith(sys.argv[1]), aelstm.core.bundle.__file__;"
        "assert 'torch' not in sys.modules"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, cwd=tmp_path, env=env, timeout=120)


def test_generated_grpc_code_is_current(tmp_path):
    subprocess.run([sys.executable, str(REPO / "protos" / "generate.py"), str(tmp_path)], check=True, timeout=120)
    committed = REPO / "protos" / "aelstm" / "v1"
    for generated in (tmp_path / "aelstm" / "v1").iterdir():
        assert filecmp.cmp(generated, committed / generated.name, shallow=False), (
            f"{generated.name} is stale: run `python protos/generate.py`"
        )
