# parcelbox main.py: the application, unless boot.py chose safe mode.
from pb_esp32 import safe

if safe.ACTIVE:
    print("PB W 0 safe mode: application skipped, the REPL is free")
else:
    from pb_esp32 import main
    main.main()
