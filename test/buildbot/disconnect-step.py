# A step that disconnects its own worker from the master side, with Buildbot's
# own worker.disconnect(), the first time it runs (as Buildbot's integration
# test test_worker_reconnect does). Buildbot then puts the build request back
# and retries the build once the worker is attached again; the second run
# succeeds. exec'd into a generated master.cfg by test/helpers/buildbot.ts
# (option `include`); used by test/buildbot-reconnect.test.ts.

from buildbot.process.buildstep import BuildStep
from buildbot.process.results import SUCCESS


class TetherDisconnectingStep(BuildStep):
    runs = 0

    def run(self):
        TetherDisconnectingStep.runs += 1
        if TetherDisconnectingStep.runs == 1:
            self.worker.disconnect()
        return SUCCESS
