"""Hidden suites of Part 2 (deploy/): one module per part, run with ``runner --homework deploy``."""
