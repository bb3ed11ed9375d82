"""Word count with the batch map API: ``map_chunk`` sees many lines at once.

``map_chunk(offset, text)`` receives a chunk of whole lines (a few MB of
text) instead of one line per call, so it can count a whole chunk with
``collections.Counter`` in C and yield one pair per distinct word: the
framework's per-record work shrinks to a fraction.

    python -m pytxmr run examples/wordcount_batch.py data/sample.txt -o /tmp/wcb
"""

from collections import Counter

from pytxmr import combiners


def map_chunk(offset, text):
    yield from Counter(text.split()).items()


#: Adds each chunk's counts to the running totals as they are yielded.
combine = combiners.sum


def reduce(word, counts):
    yield word, sum(counts)
