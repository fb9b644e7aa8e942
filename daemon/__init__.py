"""polishd: a hot-folder daemon that finishes AI-generated images."""

__version__ = "0.1.0"
