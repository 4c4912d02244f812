/**
 * A child-process probe for test/wire-fuzz.test.ts: does an authenticated
 * master's misdirected message crash the agent's process? It runs only when
 * TETHER_WIRE_PROBE names a mode (tap also loads this file as a test, and
 * then it does nothing):
 *
 *   update   an UPDATE (an agent -> master message) on a running stream
 *   overrun  DATA beyond the stream's flow-control credit (more than 2 windows)
 *
 * Prints "survived" and what the fake master received, and exits 0, if the
 * agent's process is still up 500 ms later; an uncaught exception exits non-zero.
 */
import { MsgType } from '../../wire/messages';
import { fakeMaster, masterSide, startAgent } from './wire-net';
import { sleep } from './support';

async function probe(mode: string): Promise<void> {
  const window = 4096;
  let started = false;
  const fake = await fakeMaster((peer) => {
    void (async () => {
      await masterSide(peer, 's', { window });
      await peer.waitFor((m) => m.type === MsgType.INFO, 5000);
      peer.sendSequenced({ type: MsgType.START, stream: 0, command: 'wait', args: {} });
      await sleep(100);
      started = true;
      if (mode === 'update') peer.sendSequenced({ type: MsgType.UPDATE, stream: 0, key: 'rc', value: 0 });
      else for (let i = 0; i < 3; i++) peer.sendSequenced({ type: MsgType.DATA, stream: 0, data: Buffer.alloc(window) });
    })().catch((error) => console.log(`probe master failed: ${String(error)}`));
  });
  const agent = startAgent(fake.port, 'probe', 's');
  // The agent's echo command is replaced by one that waits, so the stream stays open.
  (agent.agent as unknown as { opts: { commands: Record<string, unknown> } }).opts.commands.wait = () => sleep(2000);
  for (let i = 0; i < 100 && !started; i++) await sleep(20);
  await sleep(500);
  const peer = fake.peers[0];
  const seen = (peer?.received ?? []).map((m) =>
    m.type === MsgType.REJECT ? `REJECT ${m.code} stream ${String(m.stream)}` : m.type === MsgType.ERROR ? `ERROR ${m.code}` : String(m.type),
  );
  console.log(`${started ? 'survived' : 'never started'} ${JSON.stringify(seen)}`);
  agent.agent.stop();
  await fake.close();
  process.exit(started ? 0 : 2);
}

if (process.env.TETHER_WIRE_PROBE) void probe(process.env.TETHER_WIRE_PROBE);
