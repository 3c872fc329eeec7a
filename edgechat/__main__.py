import sys

if getattr(sys, "frozen", False):  # a PyInstaller build: its spawned children (quantize's,
    import multiprocessing  # lab/quantize.py) run their task, not the command line again

    multiprocessing.freeze_support()

from edgechat.cli import main  # noqa: E402

raise SystemExit(main())
