"""The wheel installs only namespaced packages, and the committed gRPC code matches the .proto."""

import filecmp
import shutil
import subprocess
import sys
import zipfile

import pytest

from support import PACKAGE_FOLDERS, REPO


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
    for package in ("cli", "core", "training", "server", "client", "v1"):
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
        "import aelstm.core.bundle, aelstm.cli, aelstm.server, aelstm.client, aelstm.v1.scoring_pb2_grpc as g, sys;"
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


def test_every_subpackage_reaches_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"cli", "core", "training", "server", "client"} <= set(PACKAGE_FOLDERS)
    for folder in PACKAGE_FOLDERS:
        for init in (REPO / folder).rglob("__init__.py"):
            assert f"aelstm/{init.relative_to(REPO).as_posix()}" in names


def test_a_new_subpackage_is_packaged_without_editing_the_build_files(tmp_path):
    """A copy of the checkout with one more subpackage: it is found, not listed."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    tree = tmp_path / "tree"
    for name in tracked.splitlines():
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    (tree / "server" / "added").mkdir()
    (tree / "server" / "added" / "__init__.py").write_text('"""A subpackage nobody listed."""\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, timeout=300)
    built = next(tmp_path.glob("aelstm-*.whl"))
    assert "aelstm/server/added/__init__.py" in zipfile.ZipFile(built).namelist()
