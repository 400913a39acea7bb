"""`python -m sfs_ros.eval ...` is the `sfs_eval` command."""
import sys

from sfs_ros.eval.cli import main

sys.exit(main())
