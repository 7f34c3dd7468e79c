# python -m pb_linux [--state DIR] [--all-off]: the service (docs/linux.md).
import sys

from pb_linux import main


def _args(argv):
    state = main.STATE_DIR
    off = False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--state" and i + 1 < len(argv):
            state = argv[i + 1]
            i += 1
        elif a == "--all-off":
            off = True
        else:
            print("usage: python -m pb_linux [--state DIR] [--all-off]", file=sys.stderr)
            sys.exit(2)
        i += 1
    return state, off


state, off = _args(sys.argv[1:])
if off:
    sys.exit(main.all_off(state))
why = main.main(state)
sys.exit(0 if why is None else 10 + why)
