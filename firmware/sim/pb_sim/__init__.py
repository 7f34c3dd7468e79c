# The sim port of the parcelbox firmware (docs/sim.md): the port of docs/runtime.md over
# host calls, so the unmodified superloop runs in the MicroPython VM with virtual hardware.
