"""The Runner's backends, by name (a light module: the CLI lists them without importing them)."""

BACKENDS = ("golden", "rtl")
