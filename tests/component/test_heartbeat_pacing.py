"""A real jobtracker and tasktracker (the daemons' services, in one process,
over PB on loopback) agree on the heartbeat interval: the worker adopts the
longer one the jobtracker answers as the cluster grows, the jobtracker's
expiry follows it, and a worker that stops heartbeating is still lost.

The cluster is one worker, so the rates are scaled down to match: 2
heartbeats a second from the cluster make a 0.5 s interval, against the
worker's own 0.1 s and an expiry of 0.3 s that would lose it at once."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from pytxmr import jobtracker, tasktracker
from pytxmr.child import Zygote
from pytxmr.jobtracker.heartbeats import MISSED_HEARTBEATS
from waiting import wait_for

SECRET = b"pacing-secret"
OWN, EXPIRY, PER_SECOND = 0.1, 0.3, 2.0
ASKED = 1 / PER_SECOND  # one worker


async def stop_if_running(svc: Any) -> None:
    if svc.running:
        await svc.stopService()


class HeartbeatPacingTests(TestCase):

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        tmp = tempfile.mkdtemp(prefix="pytxmr-pacing-")
        self.addCleanup(shutil.rmtree, tmp, True)
        zygote = Zygote(reactor)  # never started: no job is submitted, no task runs
        self.jts = jobtracker.make_service(jobtracker.Config(
            listen="tcp:0:interface=127.0.0.1", workdir=os.path.join(tmp, "jt"),
            expiry=EXPIRY, heartbeats_per_second=PER_SECOND, check_shuffle=False),
            reactor, secret=SECRET, checkers=zygote)
        self.addCleanup(stop_if_running, self.jts)
        await self.jts.startService()
        self.tts = tasktracker.make_service(tasktracker.Config(
            jobtracker=f"tcp:host=127.0.0.1:port={self.jts.port}", slots=1,
            shuffle_listen="tcp:0:interface=127.0.0.1", advertise_host="127.0.0.1",
            workdir=os.path.join(tmp, "tt"), heartbeat=OWN), reactor, secret=SECRET,
            zygote=zygote)
        self.addCleanup(stop_if_running, self.tts)
        await self.tts.startService()
        self.wid = await self.tts.registered()

    def beats(self) -> list[float]:
        """Record when the jobtracker hears each heartbeat of the worker."""
        jt, heard = self.jts.jt, []
        heartbeat = jt.heartbeat

        def recorded(wid: Any, beat: Any) -> Any:
            heard.append(time.monotonic())
            return heartbeat(wid, beat)

        jt.heartbeat = recorded  # type: ignore[method-assign]
        self.addCleanup(setattr, jt, "heartbeat", heartbeat)
        return heard

    async def test_the_worker_adopts_the_interval_the_jobtracker_answers(self) -> None:
        """Fewer heartbeats, and no false loss under an expiry shorter than the interval."""
        heard = self.beats()
        await wait_for(lambda: self.tts.heartbeat_interval == ASKED)
        del heard[:]
        await task.deferLater(reactor, 4 * ASKED)
        gaps = [b - a for a, b in zip(heard, heard[1:])]
        self.assertTrue(gaps and min(gaps) > ASKED * 0.8, gaps)
        # Lost after 0.3 s by the configured expiry, were it not for the pacing.
        self.assertEqual(self.jts.jt.pacing.expiry_of(self.wid), MISSED_HEARTBEATS * ASKED)
        self.assertIn(self.wid, self.jts.jt.workers)
        self.assertTrue(self.jts.jt.scheduler.workers[self.wid].alive)

    async def test_a_worker_keeps_its_own_interval_with_a_jobtracker_that_asks_none(
            self) -> None:
        """A jobtracker from before the pacing answers None: the worker's own pace."""
        await wait_for(lambda: self.tts.heartbeat_interval == ASKED)
        heartbeat = self.jts.jt.heartbeat

        def older(wid: Any, beat: Any) -> None:
            heartbeat(wid, beat)

        self.jts.jt.heartbeat = older  # type: ignore[method-assign, assignment]
        self.addCleanup(setattr, self.jts.jt, "heartbeat", heartbeat)
        await wait_for(lambda: self.tts.heartbeat_interval == OWN)

    async def test_a_silent_worker_is_lost_after_missing_its_heartbeats(self) -> None:
        """The hung worker (its connection open, no heartbeat) is still found out."""
        await wait_for(lambda: self.tts.heartbeat_interval == ASKED)
        jt = self.jts.jt
        self.tts.getServiceNamed("heartbeat").stopService()  # as SIGSTOP would
        since = jt.scheduler.workers[self.wid].last_seen
        await wait_for(lambda: not jt.scheduler.workers[self.wid].alive)
        silent = jt.now() - since
        self.assertGreater(silent, MISSED_HEARTBEATS * ASKED)
        self.assertLess(silent, MISSED_HEARTBEATS * ASKED + 2.0)
        self.assertNotIn(self.wid, jt.workers)
