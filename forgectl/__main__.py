"""`python -m forgectl` = the `forgectl` command."""

from forgectl.cli import main

main()
