"""balloonreplay: trace-driven simulation of memory overcommitment on a virtualization host."""

from balloonreplay.errors import BalloonreplayError, ConfigError, TraceError

__version__ = "0.1.0"

__all__ = ["BalloonreplayError", "ConfigError", "TraceError", "__version__", "replay"]


def __getattr__(name: str):
    # Lazy, so `import balloonreplay` stays cheap (no numba, pandas) for the CLI and plug-ins.
    if name == "replay":
        from balloonreplay.replay import replay

        return replay
    raise AttributeError(f"module 'balloonreplay' has no attribute {name!r}")
