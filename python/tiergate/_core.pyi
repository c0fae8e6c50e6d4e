"""Contract of the Rust extension ``tiergate._core`` (checked by ``mypy.stubtest``)."""

__version__: str
