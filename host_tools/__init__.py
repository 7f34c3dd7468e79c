# parcelbox host tools: VM runner, demo and (later) backend SDK and technician CLI.
