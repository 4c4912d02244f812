/**
 * The bench's wire tap (bench/wiretap.ts), which the e2e build's byte
 * figures come from: it must read a real link as the agent and the hub
 * write it, handshake frames and authenticated ones, and count the payload
 * they carry. (It once stripped only the CRC from authenticated frames, so
 * it read nothing after the handshake: every output byte counted as overhead.)
 */
import t from 'tap';
import { runShell } from '../master-plugin/run-shell';
import { encodeHandshakeFrame } from '../wire/framing';
import { MsgType, encodeMessage } from '../wire/messages';
import { hubAndAgent, textProducer } from '../bench/lib';
import { TetherWireTap } from '../bench/wiretap';
import { withTimeout } from './helpers/support';

const OUTPUT_BYTES = 300_000;

t.test('a real link: every frame is read, and the output is payload', async (t) => {
  const pair = await hubAndAgent({ relay: true });
  t.teardown(() => pair.close());
  const tap = new TetherWireTap();
  pair.relay!.reset();
  pair.relay!.tap = (direction, chunk) => tap.feed(direction, chunk);
  let got = 0;
  const shell = runShell(pair.remote, textProducer(OUTPUT_BYTES), { onOutput: (c) => void (got += c.data.length) });
  t.equal((await withTimeout(shell.result, 30_000, 'the command')).rc, 0);
  t.equal(got, OUTPUT_BYTES);
  pair.relay!.tap = null;

  const summary = tap.summary();
  t.same(Object.keys(summary.byType).filter((type) => !/^[A-Z]+$|^output /.test(type)), [], 'every frame decoded as a message');
  t.equal(summary.byType['output (stdout/stderr)']?.payload, OUTPUT_BYTES, 'the output is counted as payload');
  t.equal(summary.payload, OUTPUT_BYTES);
  t.ok(summary.byType.START && summary.byType.COMPLETE, 'the command messages are seen');
  t.equal(summary.total, pair.relay!.total, 'the tap counts what the relay carried');
  t.ok(summary.overhead > 0 && summary.overhead < summary.total / 50, `overhead ${summary.overhead} of ${summary.total}`);
  t.ok(summary.withDeflate < summary.total / 5, `text deflates: ${summary.withDeflate} of ${summary.total}`);
});

t.test('a handshake frame is read by its own CRC', async (t) => {
  const tap = new TetherWireTap();
  const hello = encodeHandshakeFrame(
    encodeMessage({ type: MsgType.HELLO, params: { versionMin: 2, versionMax: 2, name: 'board-01', nonce: Buffer.alloc(32, 7), caps: 0, maxFrame: 512 } }),
  );
  const damaged = Buffer.from(hello);
  damaged[3] ^= 0x10;
  tap.feed('up', Buffer.concat([hello, damaged]));
  const summary = tap.summary();
  t.same(summary.byType.HELLO, { frames: 1, bytes: hello.length, payload: 0 });
  t.same(summary.byType['damaged (CRC)'], { frames: 1, bytes: damaged.length, payload: 0 });
});
