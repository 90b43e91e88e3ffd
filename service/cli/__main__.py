"""`python -m service.cli`: the `benefits` command."""

from service.cli import main

raise SystemExit(main())
