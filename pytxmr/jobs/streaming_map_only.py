"""A map-only streaming job (``python -m pytxmr run --mapper CMD``): the
mapper's lines go straight to the part files; see pytxmr.streaming."""

from pytxmr import Arg, args, streaming

arguments = [Arg("mapper", streaming.command, help="the map command")]


def map_init():
    streaming.start("map", args()["mapper"])


map = streaming.map_line


def map_final():
    return streaming.finish("map")
