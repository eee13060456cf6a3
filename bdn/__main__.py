"""`python -m bdn` is the same as the `bdn` command."""

from bdn.cli import main

raise SystemExit(main())
