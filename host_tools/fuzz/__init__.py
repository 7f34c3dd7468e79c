# The fuzzer of the box's parsers: one target per file, mutate.py the mutations.
