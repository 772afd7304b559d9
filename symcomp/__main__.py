"""``python -m symcomp``: the same as the ``symcomp`` script."""

from symcomp.cli import main

main()
