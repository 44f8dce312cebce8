"""What the tests and the benchmarks share: real Ray nodes on loopback, `distillery` commands
run as a user runs them, the fault scenarios of `tests/reliability/` and small Hugging Face
models written on the spot. Part of the repository, not of the installed package."""
