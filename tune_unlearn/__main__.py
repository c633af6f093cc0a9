from __future__ import annotations

import sys

from tune_unlearn.cli import main

sys.exit(main())
