/**
 * The worker comes back after Buildbot drops it, on a real Buildbot master,
 * without the agent noticing: Buildbot's own worker.disconnect() from a step
 * (tether-master run by TetherService), a restart of the master under a
 * standalone tether-master, and a master that refuses the worker until its
 * master.cfg is fixed. Each time a build then runs on the same agent process,
 * in the same Tether session.
 */
import t, { type Test } from 'tap';
import * as path from 'node:path';
import {
  BUILDBOT_TEST_DIR, type BuildbotMaster, type BuildInfo, type MasterOptions, createMaster, teardownBuildbot, tetherServiceConfig,
} from './helpers/buildbot';
import { alive } from './helpers/processes';
import { type TetherProcess, tetherAgent, tetherMaster } from './helpers/tether-procs';
import { freePort, sleep, waitFor } from './helpers/support';

const ECHO = { name: 'echo', steps: ["steps.ShellCommand(name='hello', command=['echo', 'hello from the board'])"] };
/** Retries at most 1 s (+ up to 1 s of jitter) apart, so that a restarted master is found at once. */
const FAST_RETRY = ['--buildbot-max-backoff', '1'];

/** The agent is the process it was, and it never lost its session with tether-master. */
function sameAgent(t: Test, agent: TetherProcess, pid: number): void {
  t.equal(agent.pid, pid, 'the agent process was not restarted');
  t.ok(alive(pid), `the agent (pid ${pid}) is alive`);
  t.equal(agent.output.match(/connected to \S+ as 'board'/g)?.length, 1, 'the agent connected to tether-master once');
  t.notMatch(agent.output, /lost the link/, 'the agent never lost its link');
}

async function echoBuild(t: Test, master: BuildbotMaster, what: string): Promise<void> {
  const build = await master.runBuild('echo', { timeoutMs: 60_000 });
  t.equal(build.result, 'success', `${what}: the build succeeds (${build.state_string})`);
  t.equal(build.step('hello')?.log()?.stdio?.stdout, 'hello from the board\n', `${what}: the step ran on the agent`);
}

/** A master with worker 'board' (Buildbot password `password`), a standalone tether-master and an agent, all started. */
async function standalone(t: Test, password: string) {
  const secret = 'reconnect-secret';
  const master = await createMaster({ workers: [{ name: 'board', password }], builders: [ECHO] });
  const listenPort = await freePort();
  const bridge = await tetherMaster({ buildbotPort: master.msgpackPort, listenPort, workers: { board: secret }, extraArgs: FAST_RETRY });
  const agent = await tetherAgent({ port: listenPort, name: 'board', secret });
  teardownBuildbot(t, master, bridge, agent);
  await master.start();
  await bridge.start();
  await agent.start();
  await agent.waitForOutput(/connected to \S+ as 'board'/);
  return { master, bridge, agent, secret, pid: agent.pid! };
}

t.test("Buildbot's worker.disconnect(): TetherService's tether-master reconnects, the build is retried on the same agent", async (t) => {
  const secret = 'kicked-secret';
  const listenPort = await freePort();
  const options: MasterOptions = {
    workers: [{ name: 'board', password: secret }],
    include: [path.join(BUILDBOT_TEST_DIR, 'disconnect-step.py')],
    builders: [{
      name: 'kick',
      steps: [
        "steps.ShellCommand(name='before', command=['echo', 'before'])",
        "TetherDisconnectingStep(name='disconnect')",
        "steps.ShellCommand(name='after', command=['echo', 'after the reconnect'])",
      ],
    }],
    // default backoff: the first retry comes 1.5 to 2.5 s after the loss, as buildbot-worker's
    extraConfig: tetherServiceConfig(`listen=['tcp://127.0.0.1:${listenPort}']`),
  };
  const master = await createMaster(options);
  const agent = await tetherAgent({ port: listenPort, name: 'board', secret });
  teardownBuildbot(t, master, agent);
  await master.start();
  await agent.start();
  await master.waitForWorker('board', { timeoutMs: 30_000 });
  const pid = agent.pid!;

  const brid = await master.forceBuild('kick');
  const request = await waitFor('the build request to complete', async () => {
    const r = await master.get<{ buildrequests: Array<{ complete: boolean; results: number }> }>(`/buildrequests/${brid}`);
    return r.buildrequests[0]?.complete ? r.buildrequests[0] : undefined;
  }, { timeoutMs: 60_000 });
  const { builds } = await master.get<{ builds: BuildInfo[] }>(`/builds?buildrequestid=${brid}`);
  // what buildbot-worker gets from the same master.cfg
  t.same(builds.map((b) => [b.results, b.state_string]), [[5, 'retry lost connection'], [0, 'build successful']],
    'the first build ends with the lost worker and is retried; the retry succeeds');
  t.equal(request.results, 0, 'the build request succeeds');
  const retried = await master.getBuildResult(builds[1]!.buildid);
  t.equal(retried.step('after')?.log()?.stdio?.stdout, 'after the reconnect\n', 'the retried build ran its steps on the agent');
  sameAgent(t, agent, pid);
  const log = master.logTail(100_000);
  t.match(log, /worker 'board' lost its Buildbot connection; retry 1 in [\d.]+ s/, 'tether-master logged the loss and its retry');
  t.match(log, /worker 'board' attached to Buildbot at \S+ again/, 'and the attachment');
});

t.test('a restart of the Buildbot master: a standalone tether-master reconnects, a build runs on the same agent', async (t) => {
  const { master, bridge, agent, pid } = await standalone(t, 'reconnect-secret');
  await master.waitForWorker('board', { timeoutMs: 30_000 });
  await echoBuild(t, master, 'before the restart');

  await master.stop();
  await bridge.waitForOutput(/worker 'board' lost its Buildbot connection/);
  // while the master is down, attempts fail (connection refused) and are retried
  await bridge.waitForOutput(/worker 'board' is not attached to Buildbot; retry 2 in [\d.]+ s/);
  await master.start();
  await master.waitForWorker('board', { timeoutMs: 30_000 });
  await echoBuild(t, master, 'after the restart');
  sameAgent(t, agent, pid);
  t.match(bridge.output, /worker 'board' attached to Buildbot at \S+ again after \d+ attempts/, 'tether-master logged the attachment and what it took');

  // The agent's session ending ends the attachment: no retry follows.
  await agent.stop();
  await master.waitForWorker('board', { connected: false, timeoutMs: 10_000 });
  const ended = bridge.output.length;
  await sleep(2500); // longer than any FAST_RETRY delay
  t.notMatch(bridge.output.slice(ended), /connecting to|retry/, 'tether-master does not reconnect a worker whose agent has gone');
  t.notOk((await master.worker('board'))?.connected_to.length, 'Buildbot sees the worker gone');
});

t.test('Buildbot refusing the worker: the agent stays, tether-master retries until master.cfg is fixed', async (t) => {
  const { master, bridge, agent, secret, pid } = await standalone(t, 'not the secret');
  await bridge.waitForOutput(/worker 'board' is not attached to Buildbot; retry 2 in [\d.]+ s/);
  t.match(bridge.output, /Buildbot refused worker 'board' \(HTTP 401: unknown worker name or wrong password\)/, 'tether-master logged why');
  t.match(agent.output, /message from master: not attached to Buildbot \(Buildbot refused worker 'board' \(HTTP 401.*\); retrying with backoff\n/,
    'the agent was told why, in its own log, once');
  t.equal(agent.output.match(/not attached to Buildbot/g)?.length, 1, 'once for the whole run of refusals');
  await master.writeConfig({ ...master.config, workers: [{ name: 'board', password: secret }] });
  await master.reconfig();
  await master.waitForWorker('board', { timeoutMs: 30_000 });
  await echoBuild(t, master, 'once the password is right');
  sameAgent(t, agent, pid);
});
