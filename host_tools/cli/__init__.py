# The `parcelbox` command: click groups only, one file per group, shared options in options.py.
# Each group calls into backend, tech, sim, vboard or hardware; none holds the behaviour itself.
