/**
 * The deflate capability beyond serial lines: the hub offers it where
 * `compress` says (serial lines by default, TCP too with 'always'), the
 * compressor stops paying for deflate on data that does not shrink, and a
 * compressed body where deflate was not granted is refused for what it is.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { commands } from '../agent/commands/registry';
import type { AgentConnection } from '../master-plugin/agent-connection';
import type { HubOptions } from '../master-plugin/hub';
import { runShell } from '../master-plugin/run-shell';
import { COMPRESSED_MARKER, Compressor, Decompressor, inflatedLimit } from '../wire/compression';
import { ErrorCodes } from '../wire/errors';
import { Capability } from '../wire/handshake';
import { MsgType, encodeMessage } from '../wire/messages';
import { startPair } from './helpers/pair';
import { makeTempDir } from './helpers/support';
import { rawAgent, startHub } from './helpers/wire-net';

t.test('deflate stops trying on big bodies that do not shrink, and tries again now and then; small ones it always tries', async (t) => {
  const compressor = new Compressor(1);
  const decompressor = new Decompressor(65536);
  let misread = 0;
  const roundTrip = (body: Buffer) => {
    const sent = compressor.pack(body);
    if (!decompressor.unpack(sent).equals(body)) misread++;
    return sent;
  };
  // A message body never starts with 0xff (the compressed marker): neither does this one.
  const randomBody = () => Buffer.concat([Buffer.from([0x0a]), randomBytes(8191)]);
  for (let i = 0; i < 200; i++) roundTrip(randomBody());
  t.equal(compressor.stats.packed, 0, 'random bytes went raw');
  t.ok(compressor.stats.tried <= 20, `deflate was tried on ${compressor.stats.tried} of 200 random bodies`);
  const small = Buffer.from('src/uart.c:12: warning: unused variable x\n'.repeat(8));
  t.equal(roundTrip(small)[0], COMPRESSED_MARKER, 'a small body right after them is compressed (a serial frame is never skipped)');
  const text = Buffer.from('src/uart.c:12: warning: unused variable x\n'.repeat(120));
  let firstPacked = -1;
  for (let i = 0; i < 20 && firstPacked < 0; i++) if (roundTrip(text)[0] === COMPRESSED_MARKER) firstPacked = i;
  t.ok(firstPacked >= 0 && firstPacked <= 16, `text was compressed again after ${firstPacked} raw bodies`);
  t.equal(misread, 0, 'the peer read every body back, raw or compressed');
});

t.test('fill(): each body fits the frame as sent and inflates to more than a frame, up to 16 KiB; attempts that missed leave no trace', async (t) => {
  const limit = 512;
  const most = inflatedLimit(limit);
  t.equal(most, 16_384, 'the inflated limit of 512-byte frames');
  const compressor = new Compressor(6);
  const decompressor = new Decompressor(most);
  const text = Buffer.from(Array.from({ length: 3000 }, (_, i) => `${String(i).padStart(7, '0')} [${i % 13}] src/driver${i % 31}.c ok\n`).join(''));
  // Any cut may start a body, and a message body never starts with the compressed marker.
  const random = randomBytes(20_000).map((b) => (b === COMPRESSED_MARKER ? 0 : b));
  for (const [kind, data] of [['text', text], ['random bytes', random]] as const) {
    let at = 0;
    const inflated: number[] = [];
    while (at < data.length) {
      const { body, offer } = compressor.fill(limit, most, (n) => data.subarray(at, at + n));
      const plain = data.subarray(at, at + offer);
      t.ok(body.length <= limit, `${kind}: a ${body.length}-byte body`);
      // The peer's history sees only bodies sent: a missed attempt in the sender's would show here.
      if (!decompressor.unpack(body).equals(plain)) t.fail(`${kind}: the body at ${at} read back wrong`);
      inflated.push(plain.length);
      at += plain.length;
    }
    const largest = Math.max(...inflated);
    if (kind === 'text') t.ok(largest > 4 * limit && largest <= most, `text: ${inflated.length} bodies, up to ${largest} bytes inflated`);
    else t.ok(largest <= limit, `random bytes: ${inflated.length} bodies of at most ${largest} bytes, sent raw`);
  }
  const zeros = (n: number) => Buffer.concat([Buffer.from([COMPRESSED_MARKER]), deflateRawSync(Buffer.alloc(n))]);
  t.equal(new Decompressor(most).unpack(zeros(most)).length, most, 'a body inflating to the limit is read');
  t.throws(() => new Decompressor(most).unpack(zeros(most + 1)), { code: 'BAD_MESSAGE' }, 'one byte more is BAD_MESSAGE');
});

async function wireBytesOfTextOutput(t: Test, hub: Partial<HubOptions>): Promise<number> {
  const dir = await makeTempDir('tether-compress-');
  const pair = await startPair(commands, { basedir: dir, hub });
  t.teardown(async () => {
    await pair.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const log = Buffer.from(Array.from({ length: 4000 }, (_, i) => `CC build/src/module${i % 41}.o -Wall -O2 (${i})\n`).join(''));
  fs.writeFileSync(path.join(dir, 'build.log'), log);
  const session = (pair.remote as AgentConnection).session;
  const before = session.stats.bytesIn;
  let got = 0;
  const result = await runShell(pair.remote, ['cat', 'build.log'], { onOutput: (c) => void (got += c.data.length) }).result;
  t.equal(result.rc, 0);
  t.equal(got, log.length, 'all output arrived');
  return session.stats.bytesIn - before;
}

t.test("compress: 'always' offers deflate on TCP; the default keeps it to serial lines", async (t) => {
  const plain = await wireBytesOfTextOutput(t, {});
  const packed = await wireBytesOfTextOutput(t, { compress: 'always' });
  const never = await wireBytesOfTextOutput(t, { compress: 'never' });
  t.ok(packed * 4 < plain, `a build log took ${packed} bytes on the wire with deflate, ${plain} without`);
  t.ok(never >= plain * 0.95 && never <= plain * 1.05, `'never' sends it as the default does on TCP (${never} bytes)`);
});

t.test('a compressed body where deflate was not granted: REJECT BAD_MESSAGE that says so; the session goes on', async (t) => {
  const fx = await startHub({ raw: 'raw-secret' });
  t.teardown(() => fx.close());
  const { peer, remote } = await rawAgent(fx, 'raw', 'raw-secret');
  t.teardown(() => peer.destroy());
  t.equal(peer.established.params.caps & Capability.DEFLATE, 0, 'deflate was not granted (TCP)');
  const credit = encodeMessage({ type: MsgType.CREDIT, stream: 0, bytes: 1 });
  peer.sendBody(Buffer.concat([Buffer.from([COMPRESSED_MARKER]), deflateRawSync(credit)]));
  const reject = await peer.waitFor((m) => m.type === MsgType.REJECT, 5000, 'REJECT');
  t.match(reject, { stream: null, code: ErrorCodes.BAD_MESSAGE, message: 'a compressed body, but deflate was not granted' });
  remote.run('echo', { text: 'after' }, {});
  await peer.waitFor((m) => m.type === MsgType.START, 5000, 'a START after it');
  t.ok((remote as AgentConnection).isOpen, 'the session goes on');
});
