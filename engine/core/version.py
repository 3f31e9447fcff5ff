from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fxgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
    __version__ = "0+unknown"
