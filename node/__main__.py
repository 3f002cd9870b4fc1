"""``python -m node`` is ``aimx``."""

from .cli import main

main()
