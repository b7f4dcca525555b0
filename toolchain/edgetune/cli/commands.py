"""Commands beyond `setup`; each is a few lines over the library."""

from __future__ import annotations
