"""Allow ``python -m aelab``."""

from .cli.main import console_main

console_main()
