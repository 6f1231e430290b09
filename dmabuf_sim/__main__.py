"""``python -m dmabuf_sim`` runs the command line."""

from .cli import main

raise SystemExit(main())
