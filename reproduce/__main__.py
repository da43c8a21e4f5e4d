"""``python -m reproduce`` runs the ``fastap`` command."""

from reproduce.cli.main import main

raise SystemExit(main())
