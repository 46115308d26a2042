"""The microcontroller track's hidden suites: binary weights, the budget, pruning to fit (docs/MCU.md)."""
