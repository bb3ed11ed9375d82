def map(k, line):
    yield line, 1
