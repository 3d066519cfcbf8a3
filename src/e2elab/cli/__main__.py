"""``python -m e2elab.cli``: the command line."""

from e2elab.cli import main

raise SystemExit(main())
