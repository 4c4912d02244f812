/**
 * The standard end-to-end Buildbot build with tether-master and tether-agent
 * on the two ends of a socat pty pair: tether-master --listen
 * serial:A2?baud=115200&worker=NAME (serialport), tether-agent --master
 * serial:A1?baud=115200 (pure JavaScript). A pty ignores the baud rate, so
 * this runs at pty speed.
 */
import t from 'tap';
import { createMaster, teardownBuildbot } from './helpers/buildbot';
import { checkE2E, e2eMasterOptions, prepareE2E, runE2E } from './helpers/buildbot-e2e';
import { socatPair } from './helpers/line-sim';
import { serialTetherAgent, serialTetherMaster } from './helpers/serial-procs';

t.test('a Buildbot build through tether-master and tether-agent over a serial line', async (t) => {
  const fx = await prepareE2E();
  t.teardown(() => import('node:fs/promises').then((f) => f.rm(fx.root, { recursive: true, force: true })));
  const line = await socatPair({ names: ['A1', 'A2'] });
  t.teardown(() => line.close());
  const secret = 'serial secret ✓';
  const master = await createMaster(e2eMasterOptions(fx, [{ name: 'board', password: secret }]));
  const bridge = await serialTetherMaster({ buildbotPort: master.msgpackPort, device: line.b, worker: 'board', workers: { board: secret } });
  const agent = await serialTetherAgent({ device: line.a, name: 'board', secret });
  teardownBuildbot(t, master, bridge, agent);
  await master.start();
  await bridge.start();
  // The agent's first HELLO must find the master's port open (a line has no connect).
  await bridge.waitForOutput(/listening on serial:.*A2\?baud=115200&worker=board/);
  await agent.start();
  await master.waitForWorker('board');
  t.match(bridge.output, /worker 'board' connected from serial:/);
  t.match(agent.output, /connected to serial:.*A1\?baud=115200 as 'board'/);
  const res = await runE2E(master, fx);
  checkE2E(t, fx, res);
  t.notMatch(bridge.output + agent.output, secret, 'the secret is never logged');
});
