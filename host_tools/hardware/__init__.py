# The reference design from the board files: parts, the solenoid driver's and power
# arithmetic, the design, the generated pages and the wiring tables.
