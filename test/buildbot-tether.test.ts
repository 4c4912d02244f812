/**
 * The end-to-end build on a real Buildbot master, run four ways: through the
 * reference buildbot-worker (msgpack), through tether-master + tether-agent
 * started by hand, through tether-master started by TetherService from
 * master.cfg, and through the x64 single binary (npm run build:binary). Each
 * Tether run must pass the same checks and give the same normalised record
 * (step results, stdout/stderr lines) as buildbot-worker.
 */
import t, { type Test } from 'tap';
import { type BuildbotMaster, createMaster, createWorker, tetherServiceConfig, teardownBuildbot } from './helpers/buildbot';
import { type E2EFixture, checkE2E, e2eMasterOptions, e2eRecords, prepareE2E, runE2E } from './helpers/buildbot-e2e';
import { ensureBinaries } from '../scripts/build-binary';
import { tetherAgent, tetherMaster } from './helpers/tether-procs';
import { freePort } from './helpers/support';

type Records = ReturnType<typeof e2eRecords>;

async function referenceRecords(t: Parameters<typeof checkE2E>[0], fx: E2EFixture): Promise<Records> {
  const master = await createMaster(e2eMasterOptions(fx, [{ name: 'ref', password: 'ref-secret' }]));
  const worker = await createWorker({ master, name: 'ref', password: 'ref-secret' });
  try {
    await master.start();
    await worker.start();
    await master.waitForWorker('ref');
    const res = await runE2E(master, fx);
    checkE2E(t, fx, res);
    return e2eRecords(res, fx, worker.dir);
  } finally {
    await worker.stop();
    await master.stop();
  }
}

t.test('Tether gives the same build as buildbot-worker', async (t) => {
  const fx = await prepareE2E();
  t.teardown(() => import('node:fs/promises').then((f) => f.rm(fx.root, { recursive: true, force: true })));
  const expected = await referenceRecords(t, fx);

  /** Runs the build on `master`, checks it, and compares its record with buildbot-worker's. */
  const sameBuild = async (t: Parameters<typeof checkE2E>[0], master: BuildbotMaster, agentBasedir: string) => {
    const res = await runE2E(master, fx);
    checkE2E(t, fx, res);
    const got = e2eRecords(res, fx, agentBasedir);
    t.same(got.main, expected.main, 'main build: same results and output as buildbot-worker');
    t.same(got.interrupt, expected.interrupt, 'interrupt build: same results and output as buildbot-worker');
  };

  /** The build through tether-master and a tether-agent (`binary`: the single binary) started by hand; returns the agent. */
  const byHand = async (t: Test, secret: string, binary?: string) => {
    const master = await createMaster(e2eMasterOptions(fx, [{ name: 'board', password: secret }]));
    const listenPort = await freePort();
    const bridge = await tetherMaster({ buildbotPort: master.msgpackPort, listenPort, workers: { board: secret } });
    const agent = await tetherAgent({ port: listenPort, name: 'board', secret, binary });
    teardownBuildbot(t, master, bridge, agent);
    await master.start();
    await bridge.start();
    await agent.start();
    await master.waitForWorker('board');
    await sameBuild(t, master, agent.basedir);
    t.notMatch(bridge.output + agent.output, secret, 'the secret is never logged');
    return agent;
  };

  t.test('through tether-master and tether-agent started by hand', async (t) => {
    await byHand(t, 'board secret ✓');
  });

  t.test('through TetherService loaded from master.cfg', async (t) => {
    const secret = 'another-secret';
    const listenPort = await freePort();
    const master = await createMaster(e2eMasterOptions(fx, [{ name: 'rig', password: secret }], {
      extraConfig: tetherServiceConfig(`listen=['tcp://127.0.0.1:${listenPort}']`),
    }));
    const agent = await tetherAgent({ port: listenPort, name: 'rig', secret });
    teardownBuildbot(t, master, agent);
    await master.start();
    await agent.start();
    await master.waitForWorker('rig');
    await sameBuild(t, master, agent.basedir);
    t.notMatch(master.logTail(100000) + agent.output, secret, 'the secret is never logged');
  });

  t.test('through tether-master and the single binary dist/tether-agent-linux-x64', async (t) => {
    const { 'linux-x64': binary } = await ensureBinaries({ targets: ['linux-x64'], log: (line) => t.comment(`build-binary: ${line}`) });
    const agent = await byHand(t, 'single binary secret ✓', binary);
    const strange = agent.output.split('\n').filter((l) => l && !/^\d{4}-\d\d-\d\dT[\d:.]+Z tether-agent: /.test(l));
    t.same(strange, [], 'the binary printed only its own log lines');
  });
});
