"""A map-only streaming job (``python -m pytxmr run --mapper CMD``): no
reduce, so the mapper's lines go straight to the part files; see
pytxmr.streaming and docs/streaming.md."""

from pytxmr import Arg
from pytxmr.streaming import MapSide, command

arguments = [Arg("mapper", command, help="the map command, run by /bin/sh -c")]
# Bytes that are not UTF-8 reach the command as they are.
encoding_errors = "surrogateescape"

# Module-level state is per task: the module is loaded afresh for each.
_map = MapSide("mapper")
map_init, map, map_final = _map.init, _map.map, _map.final
