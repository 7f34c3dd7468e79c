# parcelbox main.py: the application from the slot boot.py chose (pb_esp32 on an ESP32, pb_sim
# on the virtual board), unless safe mode was chosen or no application is on the board.
import os
import time

try:
    from pb_esp32 import safe
except ImportError:  # not an ESP32 application: the sim port's, or none
    safe = None


def _say(level, text):
    print("PB %s %d %s" % (level, time.ticks_ms(), text))


# safe_once: one boot in safe mode, asked for by `parcelbox deploy` (removed here, so a deploy
# killed after its reset leaves a board that boots its application again)
def _once():
    try:
        os.remove("safe_once")
        return True
    except OSError:
        return False


def _flag():
    try:
        return os.stat("safe_mode")[6] >= 0
    except OSError:
        return False


try:
    import parcelbox
    _say("I", "firmware %s from %s" % (parcelbox.VERSION, parcelbox.__file__.rsplit("/", 2)[0]))
except ImportError:
    parcelbox = None
if _once() or (safe.ACTIVE if safe is not None else _flag()):
    _say("W", "safe mode: application skipped, the REPL is free")
elif safe is not None:
    from pb_esp32 import main
    main.main()
else:
    try:
        from pb_sim import main
    except ImportError:
        main = None
    if main is None or parcelbox is None:
        _say("E", "no application on this board: run parcelbox deploy; the REPL is free")
    else:
        main.main(os.getcwd())
