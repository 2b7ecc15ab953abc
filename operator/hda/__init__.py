"""HyperDrive Accelerator: operator and runtime for real-time ingest pipelines on Valkey Streams."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hyperdrive-accelerator")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
