# parcelbox main.py: the application from the slot boot.py chose (pb_esp32 on an ESP32, pb_sim
# on the virtual board), unless safe mode was chosen or no application is on the board.
import os
import sys
import time

_OTHER = {"app_a": "app_b", "app_b": "app_a"}


def _say(level, text):
    print("PB %s %d %s" % (level, time.ticks_ms(), text))  # type: ignore[str-format]  # stub: ints


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


# A slot boot.py took whole (every file at its size) whose code does not load all the same
# (a damaged .mpy raises ValueError, a module may be missing): the imports go again from the
# other slot, once, if that one is complete (boot.py's _complete, in the globals main.py
# shares with it). No slot (frozen firmware), or no other complete one: False.
def _fallback(e):
    global SLOT
    try:
        cur = SLOT  # type: ignore[name-defined]  # boot.py's: one __main__ for both
        base, name = cur.rsplit("/", 1)
        other = base + "/" + _OTHER[name]
        if not _complete(other):  # type: ignore[name-defined]  # boot.py's
            return False
    except Exception:  # noqa: BLE001 - no slot, boot.py did not run: nothing to fall back to
        return False
    _say("E", "%s does not load (%s): starting %s" % (cur, e.__class__.__name__, other))
    if cur in sys.path:
        sys.path.remove(cur)
    sys.path.insert(0, other)
    SLOT = other  # type: ignore[name-defined]  # boot.py's
    for m in list(sys.modules):
        if m == "parcelbox" or m.startswith("parcelbox.") or m.startswith("pb_"):
            del sys.modules[m]
    return True


_safe = None   # safe mode, decided once (safe_once is consumed)
for _try in (0, 1):
    try:
        try:
            from pb_esp32 import safe
        except ImportError:  # not an ESP32 application: the sim port's, or none
            safe = None  # type: ignore[assignment]  # a module or None
        try:
            import parcelbox
            _say("I", "firmware %s from %s" % (parcelbox.VERSION, parcelbox.__file__.rsplit("/", 2)[0]))
        except ImportError:
            parcelbox = None  # type: ignore[assignment]  # a module or None
        if _safe is None:
            _safe = _once() or (safe.ACTIVE if safe is not None else _flag())
        main = None
        if not _safe:
            if safe is not None:
                from pb_esp32 import main  # type: ignore[assignment]  # a module or None
            elif parcelbox is not None:
                try:
                    from pb_sim import main  # type: ignore[import-not-found, no-redef]  # the sim's
                except ImportError:
                    main = None
        break
    except Exception as e:  # noqa: BLE001 - a damaged slot: the other one, or the error stands
        if _try or not _fallback(e):
            raise
if _safe:
    _say("W", "safe mode: application skipped, the REPL is free")
elif main is None:
    _say("E", "no application on this board: run parcelbox deploy; the REPL is free")
elif safe is not None:
    main.main()
else:
    main.main(os.getcwd())
