/**
 * The send queue hands out payload bodies as parts (wire/body-parts.ts): the
 * message head, then the queued buffers themselves, never copied. Joined, the
 * parts are exactly the body encodeMessage() makes.
 */
import t from 'tap';
import { bodyLength } from '../wire/body-parts';
import { DEFAULT_MAX_FRAME, DEFAULT_WINDOW } from '../wire/handshake';
import { Channel, MsgType, type OutgoingMessage, encodeMessage } from '../wire/messages';
import { SendQueue } from '../wire/send-queue';
import { payloadChunks } from '../wire/stream-io';

const LENGTHS = [0, 1, 23, 24, 255, 256, 65_535, 65_536];

t.test('a payload body in parts: the head, then the queued bytes themselves; joined, what encodeMessage makes', async (t) => {
  const kinds: Array<(data: Buffer) => OutgoingMessage> = [
    (data) => ({ type: 'output', stream: 3, channel: Channel.STDERR, data }),
    (data) => ({ type: MsgType.DATA, stream: 70_000, data }),
    (data) => ({ type: MsgType.LOG, stream: 2, name: 'config.log', data }),
    (data) => ({ type: MsgType.STDIN, stream: 1, data }),
  ];
  let checked = 0;
  for (const make of kinds) {
    for (const length of LENGTHS.filter((n) => n > 0)) {
      const data = Buffer.alloc(length, 0x61);
      const queue = new SendQueue(65_536 + 64);
      queue.push(make(data));
      const body = queue.shift()!;
      t.equal(queue.length, 0);
      t.same(Buffer.concat(body), encodeMessage(make(data)), `${make(data).type} of ${length} bytes`);
      t.equal(body[1], data, 'the queued buffer itself, not a copy');
      checked++;
    }
  }
  t.equal(checked, 4 * 7);
});

t.test('payload joined behind a busy link and cut at the frame size: pieces of the queued buffers, in order', async (t) => {
  const queue = new SendQueue(1000);
  const chunks = [Buffer.alloc(300, 1), Buffer.alloc(500, 2), Buffer.alloc(400, 3)];
  for (const data of chunks) queue.push({ type: 'output', stream: 0, channel: Channel.STDOUT, data });
  t.equal(queue.length, 2, 'the first two joined (800 bytes and the head fit 1000), the third waits apart');
  const first = queue.shift(600)!;
  t.same(first.slice(1).map((p) => p.length), [300, 284], 'a 600-byte body: 16 of head room, 300 + 284 of the buffers');
  t.equal(first[1], chunks[0], 'the first buffer whole');
  t.equal(first[2].buffer, chunks[1].buffer, 'a view into the second');
  const rest = [queue.shift()!, queue.shift()!];
  t.equal(queue.shift(), undefined);
  const sent = [first, ...rest].map((body) => Buffer.concat(body.slice(1)));
  t.same(Buffer.concat(sent), Buffer.concat(chunks), 'every byte once, in order');
  t.equal(queue.bytes, 0);
});

t.test('with the default frame size on TCP, a 64 KiB read of a pipe or a file goes out as one frame', async (t) => {
  for (const make of [
    (data: Buffer): OutgoingMessage => ({ type: 'output', stream: 2 ** 31 - 1, channel: Channel.STDERR, data }),
    (data: Buffer): OutgoingMessage => ({ type: MsgType.DATA, stream: 2 ** 31 - 1, data }),
  ]) {
    const data = Buffer.alloc(64 * 1024, 0x61);
    t.equal(payloadChunks(data, DEFAULT_MAX_FRAME, DEFAULT_WINDOW).next().value?.length, data.length, `${make(data).type}: one chunk`);
    const queue = new SendQueue(DEFAULT_MAX_FRAME);
    queue.push(make(data));
    const body = queue.shift()!;
    t.equal(queue.length, 0, 'one body');
    t.ok(bodyLength(body) <= DEFAULT_MAX_FRAME, `of ${bodyLength(body)} bytes, within ${DEFAULT_MAX_FRAME}`);
  }
});
