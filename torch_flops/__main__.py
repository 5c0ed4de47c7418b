"""``python -m torch_flops MODEL``: see :mod:`torch_flops.cli`."""

from torch_flops.cli import main

raise SystemExit(main())
