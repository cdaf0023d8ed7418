"""`python -m logwatchd` is the `logwatchd` command."""

from .cli import main

raise SystemExit(main())
