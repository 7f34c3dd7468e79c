# VM side of bench/bench_memory.py: the device of vm_memory.py as a frozen image would
# run it. Every module's source is compiled first and the code objects kept: they stand
# for the image in flash (bytecode, constants, names). Then each module body runs from
# that code into the module object of an empty stub file (first on the path), making the
# module, class and function objects a frozen image makes in RAM too; then vm_memory.
import gc
import sys

import benchorder

gc.collect()
F0 = gc.mem_free()
rom = []
for name, path in benchorder.ORDER:
    f = open(path)
    src = f.read()
    f.close()
    rom.append(compile(src, path, "exec"))
    src = None
    gc.collect()
gc.collect()
print("rom=%d" % (F0 - gc.mem_free()))
fakes = 0
for i in range(len(rom)):
    name = benchorder.ORDER[i][0]
    gc.collect()
    f1 = gc.mem_free()
    __import__(name)                    # the empty stub: a module object to run it in
    exec(rom[i], sys.modules[name].__dict__)
    gc.collect()
    if name in benchorder.FAKES:
        fakes += f1 - gc.mem_free()
print("fakes=%d" % fakes)
gc.collect()
print("bodies=%d" % (F0 - gc.mem_free()))
import vm_memory  # noqa: E402,F401
