/**
 * What a side holds of a peer's bytes costs what it counts (PROTOCOL.md 7.8):
 * bounds are in bytes, so a held byte must not keep more memory alive than a
 * few bytes. A decoded byte string is a view into its frame, and a frame
 * body from the reader a slice of Node's shared pool; held as they came, a
 * FRAGMENT piece of 1 byte followed by 60 KB of ignored trailing items kept
 * the whole frame, and an outside tester pinned 1.3 GB of a hub's memory with
 * 21 000 counted bytes. Checked here by the memory behind each held buffer
 * and, for the queues, by the process's live ArrayBuffer bytes after a
 * forced garbage collection (exact, unlike RSS).
 */
import t from 'tap';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { ByteRun } from '../wire/byte-run';
import { encodeSequence } from '../wire/cbor';
import { CreditLedger } from '../wire/credit';
import { Reassembler } from '../wire/fragments';
import { FrameReader, encodeHandshakeFrame } from '../wire/framing';
import { Channel, MsgType, decodeMessage, encodeOutput } from '../wire/messages';
import { InboundQueue } from '../wire/stream-io';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Live ArrayBuffer bytes after a full collection. */
function arrayBufferBytes(): number {
  gc();
  gc();
  return process.memoryUsage().arrayBuffers;
}

const JUNK = Buffer.alloc(60_000, 0x41);

/** A decoded message's field, from a body that ends in 60 KB of ignored trailing items. */
function fragmentWithJunk(piece: Buffer, more = true): { more: boolean; data: Buffer } {
  const m = decodeMessage(encodeSequence([MsgType.FRAGMENT, more, piece, JUNK]));
  if (m.type !== MsgType.FRAGMENT) throw new Error('not a FRAGMENT');
  return m;
}

t.test('the frame reader gives each body memory of its own, exactly its size', async (t) => {
  const reader = new FrameReader();
  const bodies: Buffer[] = [];
  reader.on('frame', (body: Buffer) => bodies.push(body));
  reader.feed(encodeHandshakeFrame(Buffer.from('a small frame')));
  t.equal(bodies.length, 1);
  t.equal(bodies[0].buffer.byteLength, bodies[0].length, `memory behind a ${bodies[0].length}-byte body`);
});

t.test('a decoded byte string that is a small part of its frame is copied out; one that fills it is not', async (t) => {
  const small = fragmentWithJunk(Buffer.from('x'));
  t.equal(small.data.toString(), 'x');
  t.ok(small.data.buffer.byteLength <= 2, `a 1-byte piece keeps ${small.data.buffer.byteLength} bytes alive`);

  const update = decodeMessage(encodeSequence([MsgType.UPDATE, 0, 'key', { nested: [Buffer.from('yz')] }, JUNK]));
  if (update.type !== MsgType.UPDATE) throw new Error('not an UPDATE');
  const nested = (update.value as { nested: Buffer[] }).nested[0];
  t.equal(nested.toString(), 'yz');
  t.ok(nested.buffer.byteLength <= 4, `a byte string inside an UPDATE value keeps ${nested.buffer.byteLength} bytes alive`);

  const body = Buffer.alloc(70_000);
  const encoded = encodeOutput(3, Channel.STDOUT, Buffer.alloc(65_536, 0x42));
  encoded.copy(body);
  const full = decodeMessage(body.subarray(0, encoded.length));
  if (full.type !== 'output') throw new Error('not output');
  t.equal(full.data.buffer, body.buffer, 'output that fills its frame stays a view of it (no copy)');
});

t.test('a fragmented message holds its bytes, whatever its pieces', async (t) => {
  const r = new Reassembler();
  const before = arrayBufferBytes();
  for (let i = 0; i < 300; i++) r.add(fragmentWithJunk(Buffer.from([i & 0xff])));
  for (let i = 0; i < 100_000; i++) r.add({ more: true, data: Buffer.alloc(0) });
  const held = arrayBufferBytes() - before;
  t.equal(r.heldBytes, 300, 'counted: 300 bytes');
  t.ok(r.heldMemory <= 2 * 300 + 64, `its buffer: ${r.heldMemory} bytes`);
  t.ok(held < 256 * 1024, `live ArrayBuffer bytes grew by ${held} (the pieces came in 300 frames of 60 KB)`);
  const body = r.add({ more: false, data: Buffer.from('!') });
  t.equal(body?.length, 301, 'the message is whole');
});

t.test('output waiting for its consumer holds its bytes, not its frames', async (t) => {
  const ledger = new CreditLedger(1 << 20, 'stream 0');
  const queue = new InboundQueue<null>(ledger, () => undefined);
  const before = arrayBufferBytes();
  for (let i = 0; i < 300; i++) {
    // 1 byte of stdout, then of stderr, so that no two join: each waits on its own.
    const m = decodeMessage(encodeSequence([-1 - (i % 2), Buffer.from('o'), JUNK]));
    if (m.type !== 'output') throw new Error('not output');
    queue.payload(String(m.channel), m.data);
  }
  const held = arrayBufferBytes() - before;
  t.equal(queue.length, 300, '300 messages wait');
  t.ok(held < 256 * 1024, `live ArrayBuffer bytes grew by ${held} (they came in 300 frames of 60 KB)`);
});

t.test("a run's own room is outside Node's shared pool", async (t) => {
  const run = new ByteRun(Buffer.from('a'));
  run.append(Buffer.from('b'));
  t.equal(run.memory, run.bytes().buffer.byteLength);
  t.ok(run.memory <= 4, `a 2-byte run keeps ${run.memory} bytes alive`);
});
