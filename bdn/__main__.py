"""`python -m bdn` is the same as the `bdn` command."""

from bdn.cli.main import main

raise SystemExit(main())
