"""edgetune: fine-tune on a GPU host, ship to an ARM edge device, and prove what survived."""

__version__ = "0.1.0"
