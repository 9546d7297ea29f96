"""`python -m tests.soak` (= `make soak`): SOAK_MINUTES (default 30, at most 30) of RELIABILITY's [S] scenarios."""

import sys

from tests.soak.driver import main

sys.exit(main())
