"""``python -m reproduce`` runs the ``fastap`` command."""

from reproduce.cli import main

raise SystemExit(main())
