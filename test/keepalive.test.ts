/** Dead-peer detection: a link that silently stops carrying bytes is found by keepalive. */
import t from 'tap';
import { Agent } from '../agent/agent';
import { TetherHub } from '../master-plugin/hub';
import { connect } from '../wire/transport';
import { FaultProxy } from './helpers/fault-proxy';

t.test('both sides notice a silent peer within three keepalive intervals', async (t) => {
  // Without resume the session ends there (test/resume.test.ts covers silence with resume).
  const hub = new TetherHub({ workers: { w: 'k' }, keepalive: 1, resume: false });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const relay = new FaultProxy(address.port);
  await relay.start();
  const disconnects: Array<Error | null> = [];
  const agent = new Agent({
    name: 'w', secret: 'k', basedir: '/tmp', commands: {}, masterLabel: 'relay', maxBackoffMs: 60_000,
    open: () => connect({ kind: 'tcp', host: '127.0.0.1', port: relay.port }),
  });
  agent.on('disconnected', (e: Error | null) => disconnects.push(e));
  const running = agent.run();
  t.teardown(async () => {
    agent.stop();
    await running;
    await relay.close();
    await hub.close();
  });
  const remote = await hub.waitForAgent('w', 5000);
  const cutAt = Date.now();
  relay.silence(); // a half-open connection: bytes swallowed, nothing closed
  await remote.closed;
  const masterNoticed = Date.now() - cutAt;
  while (disconnects.length === 0 && Date.now() - cutAt < 10_000) await new Promise((r) => setTimeout(r, 50));
  const agentNoticed = Date.now() - cutAt;
  t.ok(masterNoticed >= 2000 && masterNoticed < 5000, `master noticed after ${masterNoticed} ms`);
  t.ok(disconnects.length === 1 && agentNoticed < 5000, `agent noticed after ${agentNoticed} ms`);
  t.match(String(disconnects[0]), /no frame from the peer/);
});
