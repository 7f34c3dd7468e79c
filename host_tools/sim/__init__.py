# The simulator: the sim and linux ports on a virtual circuit, scenarios, the demo and the
# deterministic simulation.
