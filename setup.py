"""Packages of nni-xfer, found on disk (metadata and dependencies: setup.cfg).

``strategies/`` and ``search_spaces/`` are installed as ``nni_xfer.strategies`` and
``nni_xfer.search_spaces``; every package below them (a new method's folder) is included without
editing a list. Running from the source tree without this mapping: see ``nni_xfer/__init__.py``.
"""
import os
import tempfile

from setuptools import find_packages, setup

MAPPED = {'nni_xfer': 'nni_xfer', 'nni_xfer.strategies': 'strategies', 'nni_xfer.search_spaces': 'search_spaces'}

packages = []
for name, folder in MAPPED.items():
    packages.append(name)
    packages += [f'{name}.{sub}' for sub in find_packages(folder)]

# build outside the source tree: `pip install .` / `pip wheel .` leave no build/ folder behind
BUILD = os.path.join(tempfile.gettempdir(), f'nni-xfer-build-{os.getuid() if hasattr(os, "getuid") else 0}')

setup(packages=packages, package_dir=MAPPED, options={'build': {'build_base': BUILD}})
