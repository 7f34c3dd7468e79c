# The technician's tools over a serial connection (or the virtual board): which port, build,
# deploy, provision, monitor, doctor, the client certificate and the heap a build needs.
