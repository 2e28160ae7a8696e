"""`python -m kompress_operator`: the same as the `kompress-operator` command."""

import sys

from kompress_operator.main import main

sys.exit(main())
