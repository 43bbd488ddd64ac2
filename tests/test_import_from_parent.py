"""``import headprobe`` from the folder that holds a checkout named ``headprobe``.

Python makes a namespace package of any folder in the current directory whose name is
imported; the editable install must put the real package ahead of it.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_headprobe_from_the_checkouts_parent(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    build = subprocess.run(   # the editable wheel pip builds for `pip install -e .`
        [sys.executable, "-c", "import sys, setuptools.build_meta as b; "
         "print(b.build_editable(sys.argv[1]))", str(wheels)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    site_dir = tmp_path / "site-packages"
    with zipfile.ZipFile(wheels / build.stdout.split()[-1]) as wheel:
        wheel.extractall(site_dir)
    parent = tmp_path / "parent"            # holds the checkout, named as the package
    parent.mkdir()
    (parent / "headprobe").symlink_to(REPO, target_is_directory=True)
    got = subprocess.run(
        [sys.executable, "-c", "import site, sys; site.addsitedir(sys.argv[1]); "
         "import headprobe; headprobe.open_store; print(headprobe.__file__)", str(site_dir)],
        cwd=parent, env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert Path(got.stdout.strip()).resolve() == REPO / "headprobe" / "__init__.py"
