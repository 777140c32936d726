"""cht: Cannistraci-Hebb Training and dynamic sparse training, reproducibly."""

__version__ = "0.1.0"
