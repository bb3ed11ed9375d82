"""The protocol's records: each comes back equal from its wire form, and
``from_wire`` refuses (``BadMessage``) what a peer could get wrong, except
where a report must get through (heartbeats, failures), which keeps what
it can."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytxmr.counters import COUNTER_MAX, COUNTER_MIN
from pytxmr.pbwire import pack
from pytxmr.wire import (
    MAX_ERROR_MESSAGE,
    MAX_ERROR_TRACEBACK,
    MAX_LOG_TAIL,
    MIN_PROTOCOL_VERSION,
    MIN_WORKER_PROTOCOL,
    PROTOCOL_VERSION,
    AttemptResult,
    BadMessage,
    Heartbeat,
    JobInit,
    MapLocation,
    ProtocolMismatch,
    Registration,
    TaskError,
    check_protocol,
    jobtracker_endpoint,
    sendable,
)

text = st.text(max_size=20)
kinds = st.lists(st.sampled_from(["str", "int", "bytes"]), max_size=3).map(tuple)


@given(st.builds(JobInit, text, text, text, st.binary(max_size=8), text, text,
                 st.integers(0, 99), st.integers(1, 99), text,
                 st.none() | st.integers(1, 10**6), st.none() | st.just("lz4")))
def test_job_init_round_trips(init: JobInit) -> None:
    assert JobInit.from_wire(init.job_id, init.to_wire()) == init


@given(st.builds(MapLocation, st.integers(0, 10**6), text, text, st.integers(0, 65535), kinds,
                 text))
def test_map_location_round_trips(loc: MapLocation) -> None:
    assert MapLocation.from_wire(loc.to_wire()) == loc


@given(st.builds(AttemptResult, st.dictionaries(text, st.dictionaries(
                     text, st.integers(COUNTER_MIN, COUNTER_MAX))),
                 kinds, st.none() | text),
       st.builds(TaskError, text, text, text, st.none() | text),
       st.builds(Heartbeat, st.lists(text).map(tuple),
                 st.none() | st.tuples(st.integers(0), st.integers(0)),
                 st.dictionaries(text, st.floats(0, 1)), st.none() | st.integers(0)))
def test_reports_round_trip(result: AttemptResult, error: TaskError, beat: Heartbeat) -> None:
    assert AttemptResult.from_wire(result.to_wire()) == result
    assert TaskError.from_wire(error.to_wire()) == error
    assert Heartbeat.from_wire(beat.to_wire()) == beat


def test_a_heartbeat_says_what_its_worker_commits_if_it_says() -> None:
    beat = Heartbeat(("a1",), committing=("a1",))
    assert Heartbeat.from_wire(beat.to_wire()) == beat
    assert Heartbeat.from_wire(Heartbeat(("a1",)).to_wire()).committing is None
    assert Heartbeat.from_wire({**beat.to_wire(), "committing": [1]}).committing is None


def test_registration_round_trips_and_checks_the_protocol() -> None:
    reg = Registration("10.0.0.1", 7000, 4, 123)
    assert Registration.from_wire(reg.to_wire()) == reg
    committing = Registration("10.0.0.1", 7000, 4, 123, committing=("job_1_r00000_0",))
    assert Registration.from_wire(committing.to_wire()) == committing
    older = {k: v for k, v in committing.to_wire().items() if k != "committing"}
    assert Registration.from_wire(older) == reg  # a worker from before it said
    with pytest.raises(BadMessage, match="committing must be a list of strings"):
        Registration.from_wire({**reg.to_wire(), "committing": [7]})
    with pytest.raises(ProtocolMismatch, match="protocol 1"):
        Registration.from_wire({**reg.to_wire(), "protocol": 1, "min_protocol": 1})
    # Adjacent versions work together where their ranges meet: a worker of
    # a next version that still speaks ours.
    newer = {"protocol": PROTOCOL_VERSION + 1, "min_protocol": PROTOCOL_VERSION}
    assert Registration.from_wire({**reg.to_wire(), **newer}).slots == 4
    with pytest.raises(ProtocolMismatch, match="upgrade the older side"):
        Registration.from_wire({**reg.to_wire(), "protocol": PROTOCOL_VERSION + 2,
                                "min_protocol": PROTOCOL_VERSION + 1})
    with pytest.raises(ProtocolMismatch, match="names no protocol version: its message was "
                       "not made by pytxmr"):
        Registration.from_wire({k: v for k, v in reg.to_wire().items() if k != "protocol"})
    for bad in ({"slots": 0}, {"port": "7000"}, {"host": None}):
        with pytest.raises(BadMessage, match="register needs"):
            Registration.from_wire({**reg.to_wire(), **bad})
    with pytest.raises(BadMessage, match="takes a dict"):
        Registration.from_wire([PROTOCOL_VERSION])


def test_workers_that_cannot_read_each_others_map_outputs_never_meet() -> None:
    """Workers of 4 read only record format 1, and those of 5 write format
    2: a jobtracker of 5 refuses a tasktracker of 3 or 4, and a tasktracker
    of 5 says it speaks nothing older, so that a jobtracker of 4 (which
    accepts a range that meets its own 3 to 4) refuses it too."""
    reg = Registration("10.0.0.1", 7000, 4, 123).to_wire()
    v3 = {k: v for k, v in reg.items() if k != "min_protocol"}
    for old in ({**v3, "protocol": 3}, {**reg, "protocol": 4, "min_protocol": 3}):
        with pytest.raises(ProtocolMismatch, match=f"this jobtracker {MIN_WORKER_PROTOCOL} to"):
            Registration.from_wire(old)
    assert reg["min_protocol"] == MIN_WORKER_PROTOCOL == PROTOCOL_VERSION == 5
    assert not reg["min_protocol"] <= 4, "a jobtracker of 4 would take this worker"
    # Clients still may be older: their side of the protocol has not changed.
    check_protocol({"protocol": 3}, "the client")
    check_protocol({"protocol": 4, "min_protocol": 3}, "the client")
    assert MIN_PROTOCOL_VERSION == 3


@pytest.mark.parametrize("record, d", [
    (MapLocation, {"map": "0", "wid": "w", "host": "h", "port": 1, "kinds": []}),
    (MapLocation, {"map": 0, "wid": "w", "host": "h", "port": True, "kinds": []}),
    (MapLocation, {"map": 0, "wid": "w", "host": "h", "port": 1, "kinds": [1]}),
    (MapLocation, {"map": 0, "wid": "w", "host": "h", "port": 1}),
    (AttemptResult, {"counters": {"g": {"n": 1.5}}}),
    (AttemptResult, {"counters": {"g": {"n": COUNTER_MAX + 1}}}),
    (AttemptResult, {"counters": {"g": {"n": COUNTER_MIN - 1}}}),
    (AttemptResult, {"kinds": "str"}),
    (AttemptResult, "not a dict"),
])
def test_malformed_records_are_refused(record: Any, d: Any) -> None:
    with pytest.raises(BadMessage):
        record.from_wire(d)


def test_a_job_init_needs_its_fields() -> None:
    wire = JobInit("j", "s", "f", b"t", "m", "r", 1, 1, "/o").to_wire()
    with pytest.raises(BadMessage, match="JobInit.token"):
        JobInit.from_wire("j", {**wire, "token": "not bytes"})
    with pytest.raises(BadMessage, match="job id"):
        JobInit.from_wire(7, wire)
    with pytest.raises(BadMessage, match="storage_options"):
        JobInit.from_wire("j", {**wire, "storage_options": {"endpoint_url": 1}})


def test_a_job_init_carries_its_storage_options() -> None:
    init = JobInit("j", "s", "f", b"t", "m", "r", 1, 1, "s3://b/o",
                   storage_options={"endpoint_url": "http://127.0.0.1:1"})
    assert JobInit.from_wire("j", init.to_wire()) == init
    # From an older jobtracker (no options): none.
    old = {k: v for k, v in init.to_wire().items() if k != "storage_options"}
    assert JobInit.from_wire("j", old).storage_options == {}


def test_failure_reports_and_heartbeats_get_through_malformed() -> None:
    """A worker's failure is never lost to a type error, nor its liveness."""
    assert TaskError.from_wire({"type": 3, "message": None, "log": 5}) == TaskError("3", "")
    assert TaskError.from_wire("boom") == TaskError("", "boom")
    assert Heartbeat.from_wire({"attempts": ["a", 1], "shuffle_memory": {"used": -1,
                                                                         "budget": 2}}) == \
        Heartbeat(("a",), None)
    assert Heartbeat.from_wire(None) == Heartbeat()
    # A count of launches goes with a list of attempts, or it would say them ended.
    assert Heartbeat.from_wire({"attempts": "a", "launches": 3}) == Heartbeat()
    assert Heartbeat.from_wire({"launches": 3}) == Heartbeat()
    for bad in (-1, True, 2.0, "3"):
        assert Heartbeat.from_wire({"attempts": [], "launches": bad}) == Heartbeat()
    assert Heartbeat.from_wire({"attempts": [], "launches": 3}) == Heartbeat(launches=3)


def test_a_failure_of_any_text_is_reported_in_a_form_pb_carries() -> None:
    """An exception's message of 2 MB, undecodable bytes in a traceback
    (surrogateescape): a worker could not send them, and the job waited for
    the report for ever. Cut, start and end kept, surrogates escaped, under
    PB's 640 KiB, and the same again at the next hop."""
    huge = "bad record: " + "x" * 2_000_000 + " the end"
    error = TaskError.from_wire({"type": "ValueError", "message": huge,
                                 "traceback": "line caf\udce9\n" * 100_000,
                                 "log": "printed\n" * 100_000})
    assert len(error.message) <= MAX_ERROR_MESSAGE
    assert error.message.startswith("bad record: xxx") and error.message.endswith("x the end")
    assert "[pytxmr: 1,983,6" in error.message
    assert len(error.traceback) <= MAX_ERROR_TRACEBACK and "caf\\udce9" in error.traceback
    assert error.log is not None and len(error.log) <= MAX_LOG_TAIL
    assert len(pack(error.to_wire())) < 640 << 10
    assert TaskError.from_wire(error.to_wire()) == error


@given(st.text(alphabet=st.characters(), max_size=300), st.integers(60, 200))
def test_sendable_text_keeps_what_fits_and_is_its_own_sendable_form(
        text_: str, limit: int) -> None:
    sent = sendable(text_, limit)
    sent.encode("utf-8")
    assert len(sent) <= limit and sendable(sent, limit) == sent
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text_):
        assert sent == text_ if len(text_) <= limit else (
            sent[:10] == text_[:10] and sent[-10:] == text_[-10:])


@pytest.mark.parametrize("address, endpoint", [
    ("h:7000", "tcp:host=h:port=7000"),
    ("h", "tcp:host=h:port=7373"),
    (":7000", "tcp:host=127.0.0.1:port=7000"),
    ("[::1]:7000", r"tcp:host=\:\:1:port=7000"),  # read back as host "::1", not "" port 1
    ("[::1]", r"tcp:host=\:\:1:port=7373"),  # as "h" (it said "a port from 1 to 65535")
    ("tcp:host=h:port=1", "tcp:host=h:port=1"),
])
def test_jobtracker_addresses(address: str, endpoint: str) -> None:
    assert jobtracker_endpoint(address) == endpoint


@pytest.mark.parametrize("address, message", [
    ("7373", "a port needs a host, e.g. 127.0.0.1:7373"),
    ("h:99999", "a port from 1 to 65535"),
    ("h:0", "a port from 1 to 65535"),
    ("h:x", "use HOST:PORT"),
    # Its scheme was looked up as a host: "DNS lookup failed", exit 3.
    ("http://127.0.0.1:7373", r"use HOST:PORT, the jobtracker's PB port \(not a URL\)"),
])
def test_bad_jobtracker_addresses_are_named(address: str, message: str) -> None:
    """Issue 14: `--jobtracker 7373` was looked up as a host name, for minutes."""
    with pytest.raises(ValueError, match=message):
        jobtracker_endpoint(address)
