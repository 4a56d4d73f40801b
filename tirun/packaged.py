"""Where the files tirun ships live, importable without torch or diffusers (``--list`` and
``--cfg job`` stay quick)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
PACKAGED_MODELS = {"toy": ASSETS / "toy" / "model"}  # model.path names a packaged model by key
