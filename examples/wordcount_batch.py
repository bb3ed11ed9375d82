"""Word count with the batch map API: ``map_split`` sees a whole split.

``map_split(chunks)`` is called once per map task with an iterator over the
split's text, a chunk of whole lines (about 64 KB) at a time, as Spark's
``mapPartitions`` is. One ``Counter`` counts the whole split in C and the
framework gets one pair per distinct word: its per-record work shrinks to
a fraction. (``map_chunk(offset, text)``, called once per chunk, is the
stateless variant.)

With ``input_bytes`` the chunks are the file's bytes, not decoded: the
words are ``bytes``, split at ASCII whitespace, and the output writes
them as the UTF-8 text they were. Without it, ``text.split()`` of
``str`` splits at the same places and more (Unicode spaces such as U+00A0,
the ASCII separators ``\x1c``-``\x1f``), a tenth slower.

    python -m pytxmr run examples/wordcount_batch.py data/sample.txt -o /tmp/wcb
"""

from collections import Counter

from pytxmr import combiners

#: The map counts the input's bytes: nothing to decode.
input_bytes = True


def map_split(chunks):
    counts = Counter()
    for offset, text in chunks:
        counts.update(text.split())
    return counts.items()


#: Where a map's counts meet (its spills merged), they add up.
combine = combiners.sum

#: The reduces add up the counts of the splits. A built-in folding reducer
#: does what ``def reduce(word, counts): yield word, sum(counts)`` does, but
#: the reduce task folds each word's counts itself, with no call per word.
reduce = combiners.sum
