from setuptools import find_packages, setup

setup(
    name="pytxmr",
    version="0.1.0",
    description="A small, fast MapReduce framework for Python 3 built on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pytxmr", "pytxmr.*"]),
    python_requires=">=3.10",
    install_requires=[
        "twisted>=24.7",
        "zope.interface>=6",
        # msgpack: the record codec of spill files and the shuffle (no pickle
        # across hosts); batched C packing measured ~130 ns/record each way.
        "msgpack>=1.0",
    ],
    extras_require={
        # playwright drives Debian's chromium in tests/test_browser.py (never
        # `playwright install`: it downloads a browser build).
        "test": ["pytest>=8", "hypothesis>=6", "psutil>=5.9", "playwright>=1.40", "lz4>=4"],
        # --compress lz4: LZ4 frames in spills and the shuffle (docs/record-format.md).
        "lz4": ["lz4>=4"],
    },
    entry_points={"console_scripts": ["pytxmr=pytxmr.__main__:entry"]},
)
