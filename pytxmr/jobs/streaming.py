"""A streaming job: a mapper and a reducer command (``python -m pytxmr run
--mapper CMD --reducer CMD``), as in Hadoop Streaming; see pytxmr.streaming."""

from pytxmr import Arg, args, streaming

arguments = [Arg("mapper", streaming.command, help="the map command"),
             Arg("reducer", streaming.command, help="the reduce command")]


def map_init():
    streaming.start("map", args()["mapper"])


map = streaming.map_line


def map_final():
    return streaming.finish("map")


def reduce_init():
    streaming.start("reduce", args()["reducer"])


reduce = streaming.reduce_group


def reduce_final():
    return streaming.finish("reduce")
