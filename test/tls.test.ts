/** tls:// on both sides: the agent trusts a pinned certificate, refuses others, and HMAC auth still runs. */
import t from 'tap';
import { Agent } from '../agent/agent';
import type { Command } from '../agent/commands/command';
import { TetherHub } from '../master-plugin/hub';
import { connect } from '../wire/transport';
import { selfSigned } from './helpers/certs';
import { tempDir } from './helpers/support';

const commands: Record<string, Command> = {
  async hello(_args, io) {
    await io.stdout(Buffer.from('over tls'));
  },
};

t.test('an agent runs a command over tls:// with a pinned certificate', async (t) => {
  const dir = await tempDir(t, 'tether-tls-');
  const server = selfSigned(dir, 'master');
  const other = selfSigned(dir, 'other');
  const hub = new TetherHub({ workers: { w: 's3cret' }, cert: server.cert, key: server.key });
  const address = await hub.listen('tls://127.0.0.1:0');
  t.teardown(() => hub.close());

  const logs: string[] = [];
  const untrusting = new Agent({
    name: 'w', secret: 's3cret', basedir: dir, commands, masterLabel: 'tls master',
    open: () => connect(address, { ca: other.cert }), log: (l) => logs.push(l), maxBackoffMs: 100,
  });
  const refused = untrusting.run();
  const deadline = Date.now() + 5000;
  while (!logs.some((l) => /certificate|self.signed/i.test(l)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  untrusting.stop();
  await refused;
  t.ok(logs.some((l) => /certificate|self.signed/i.test(l)), `an untrusted certificate is refused: ${logs[0]}`);
  t.equal(hub.connected().length, 0, 'nothing connected with the wrong CA');

  const agent = new Agent({
    name: 'w', secret: 's3cret', basedir: dir, commands, masterLabel: 'tls master',
    open: () => connect(address, { ca: server.cert }), maxBackoffMs: 100,
  });
  const running = agent.run();
  t.teardown(async () => {
    agent.stop();
    await running;
  });
  const remote = await hub.waitForAgent('w', 5000);
  let out = '';
  const result = await remote.run('hello', {}, { stdout: (c) => void (out += c) }).result;
  t.same(result, { failure: null });
  t.equal(out, 'over tls');
});

t.test('a tls:// listener without a certificate is a clear usage error', async (t) => {
  const hub = new TetherHub({ workers: { w: 's' } });
  await t.rejects(hub.listen('tls://127.0.0.1:0'), /needs --cert and --key/);
  await hub.close();
});
