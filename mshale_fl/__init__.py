"""mshale-fl: three-tier, privacy-preserving contribution of lab protocol knowledge to a shared model."""

__version__ = "0.1.0"
