# The names pb_esp32.net takes from socket at import, for bench/bench_modules.py: the WASI
# VM has no socket module, and the module table measures imports only (nothing connects).
AF_INET = 2
SOCK_STREAM = 1
SOCK_DGRAM = 2


def getaddrinfo(*args):
    raise OSError(-202, "no network in the module table")


class socket:
    pass
