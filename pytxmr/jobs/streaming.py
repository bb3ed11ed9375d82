"""A streaming job: a mapper and a reducer command (``python -m pytxmr run
--mapper CMD --reducer CMD``), as in Hadoop Streaming; see pytxmr.streaming
and docs/streaming.md."""

from pytxmr import Arg
from pytxmr.streaming import MapSide, ReduceSide, command

arguments = [Arg("mapper", command, help="the map command, run by /bin/sh -c"),
             Arg("reducer", command, help="the reduce command, run by /bin/sh -c")]
# Bytes that are not UTF-8 reach the commands as they are.
encoding_errors = "surrogateescape"

# Module-level state is per task: the module is loaded afresh for each.
_map = MapSide("mapper")
_reduce = ReduceSide("reducer")
map_init, map, map_final = _map.init, _map.map, _map.final
reduce_init, reduce, reduce_final = _reduce.init, _reduce.reduce, _reduce.final
