/**
 * One end of the Node relay the throughput benchmark measures beside Tether
 * (bench/protocol.ts): the same shape as the socat relay, command → this
 * process → TCP → this process → nothing, written in Node:
 *
 *   plain   the chunks as they come: no framing, no CRC, no flow control;
 *   hmac    HMAC-SHA256 over every chunk at both ends, as Tether tags every frame;
 *   framed  every chunk as one authenticated Tether frame, with Tether's own
 *           code (wire/framing.ts, wire/frame-auth.ts): tag, CRC-32C and COBS
 *           at the sender; FrameReader, CRC and tag check at the receiver.
 *           Still no messages, sequence numbers, ACKs or credit.
 *
 * Each is the least a Node process can cost on this path with that much of
 * the work: 'framed' bounds any Node implementation of Tether's wire format.
 *
 *   node node-relay.js send PORT MODE     stdin → 127.0.0.1:PORT
 *   node node-relay.js receive PORT MODE  listens once, says "ready" on stdout, and at
 *                                         the end the ms from the first byte to the last
 *
 * Timed from the first byte, so Node's start-up is out: a bound on the
 * rate, in Node's favour.
 */
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { FrameAuth, wireNumber } from '../wire/frame-auth';
import { FrameReader, authenticatedParts, encodeAuthenticatedFrame } from '../wire/framing';

const RELAY_MODES = ['plain', 'hmac', 'framed'] as const;
/** What the relay does to each chunk (bench/protocol.ts imports the type only: this file is a script). */
export type RelayMode = (typeof RELAY_MODES)[number];

/** Tether's largest body on TCP (the hub's max_frame): a 64 KiB pipe read is one frame. */
const MAX_BODY = 65_552;

const [role, portText, mode] = process.argv.slice(2) as [string, string, RelayMode];
const port = Number(portText);
const key = Buffer.alloc(32, 7);
// The same key both ways: the receiver checks what the sender tags.
const auth = new FrameAuth({ agentToMaster: key, masterToAgent: key }, 'agent');

/** What the sender writes for a chunk of stdin. */
function outgoing(): (chunk: Buffer) => Buffer {
  let number = 0;
  if (mode === 'plain') return (chunk) => chunk;
  if (mode === 'hmac') {
    return (chunk) => {
      auth.tag(number++, chunk);
      return chunk;
    };
  }
  return (chunk) => encodeAuthenticatedFrame(chunk, wireNumber(number), auth.tag(number++, chunk));
}

/** What the receiver does with the bytes that arrive. */
function incoming(): (chunk: Buffer) => void {
  let number = 0;
  if (mode === 'plain') return () => undefined;
  if (mode === 'hmac') return (chunk) => void auth.tag(number++, chunk);
  const reader = new FrameReader(MAX_BODY);
  reader.on('frame', (frame: Buffer) => {
    const parts = authenticatedParts(frame);
    if (!parts || !auth.verify(number++, parts.body, parts.tag)) throw new Error(`frame ${number - 1} fails its CRC or tag`);
  });
  reader.on('invalid', (why: string) => {
    throw new Error(`an invalid frame: ${why}`);
  });
  return (chunk) => void reader.feed(chunk);
}

if (!RELAY_MODES.includes(mode) || (role !== 'send' && role !== 'receive')) {
  process.stderr.write(`usage: node-relay.js send|receive PORT ${RELAY_MODES.join('|')}\n`);
  process.exit(2);
} else if (role === 'send') {
  const frame = outgoing();
  const socket = net.connect(port, '127.0.0.1', () => {
    process.stdin.on('data', (chunk: Buffer) => {
      if (!socket.write(frame(chunk))) {
        process.stdin.pause();
        socket.once('drain', () => process.stdin.resume());
      }
    });
    process.stdin.on('end', () => socket.end());
  });
} else {
  const take = incoming();
  const server = net.createServer((socket) => {
    server.close();
    let first = 0;
    socket.on('data', (chunk: Buffer) => {
      first ||= performance.now();
      take(chunk);
    });
    socket.on('end', () => process.stdout.write(`${performance.now() - first}\n`));
  });
  server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
}
