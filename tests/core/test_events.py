# Event kinds: every kind has a name, numbers are stable, and the security set is right.
from parcelbox import events

KINDS = {n: v for n, v in vars(events).items() if n.isupper() and isinstance(v, int)
         and not n.startswith(("REASON_", "REFUSED_", "FILE_", "CLOCK_"))
         and n not in ("SECURITY", "TIME_NET", "TIME_CMD", "TIME_SHELL")}


def test_every_event_kind_has_its_name_at_its_number():
    for name, number in KINDS.items():
        assert events.NAMES[number] == name.lower()
    assert len(events.NAMES) == max(KINDS.values()) + 1


def test_security_events_are_the_ones_that_must_never_drop_silently():
    security = {n for n, v in KINDS.items() if events.is_security(v)}
    assert security == {"OPENED", "DEPOSIT", "PICKUP", "WRONG_CODE", "THROTTLED", "FORCED",
                        "SERVICE", "STORE_CORRUPT", "OVERFLOW", "CRASH", "TAMPER",
                        "TIME_REFUSED"}
