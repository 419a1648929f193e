"""Thin shim: metadata lives in pyproject.toml; this maps the top-level kernels/ folder to fastca.kernels."""

from setuptools import setup

setup(
    packages=["fastca", "fastca.backends", "fastca.cli", "fastca.distributed", "fastca.kernels"],
    package_dir={"fastca": "fastca", "fastca.kernels": "kernels"},
    package_data={"fastca": ["assets/*.npz", "assets/*.md", "assets/*.png", "assets/*.txt", "assets/play/*", "py.typed"]},
)
