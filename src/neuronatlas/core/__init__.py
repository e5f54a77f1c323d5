"""Pure logic: data in, new data out. No I/O, no orchestration, no clients."""
