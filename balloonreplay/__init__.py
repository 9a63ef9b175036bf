"""balloonreplay: trace-driven simulation of memory overcommitment on a virtualization host."""

from balloonreplay.errors import BalloonreplayError, ConfigError, TraceError

__version__ = "0.1.0"

__all__ = ["BalloonreplayError", "ConfigError", "TraceError", "__version__"]
