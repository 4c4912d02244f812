/**
 * One end of the Node relay the throughput benchmark measures beside Tether
 * (bench/protocol.ts): the same shape as the socat relay, command → this
 * process → TCP → this process → nothing, written in Node:
 *
 *   plain   the chunks as they come: no framing, no CRC, no flow control;
 *   hmac    HMAC-SHA256 over every byte at both ends, as Tether tags every frame;
 *   framed  the chunks in authenticated Tether frames of 64 KiB of payload, as
 *           Tether fills them, with Tether's own code (wire/framing.ts,
 *           wire/frame-auth.ts): tag, CRC-32C and COBS from the parts at the
 *           sender; FrameReader, CRC and tag check at the receiver.
 *           Still no messages, sequence numbers, ACKs or credit.
 *
 * 'plain' and 'hmac' are the least a Node process can cost on this path with
 * that much of the work: 'hmac' bounds any Node design that authenticates
 * every byte. 'framed' is a reference, not a bound: Tether, which does more,
 * has measured as fast.
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
import { DEFAULT_MAX_FRAME } from '../wire/handshake';
import { PAYLOAD_HEAD_BYTES } from '../wire/messages';

const RELAY_MODES = ['plain', 'hmac', 'framed'] as const;
/** What the relay does to each chunk (bench/protocol.ts imports the type only: this file is a script). */
export type RelayMode = (typeof RELAY_MODES)[number];


const [role, portText, mode] = process.argv.slice(2) as [string, string, RelayMode];
const port = Number(portText);
const key = Buffer.alloc(32, 7);
// The same key both ways: the receiver checks what the sender tags.
const auth = new FrameAuth({ agentToMaster: key, masterToAgent: key }, 'agent');

/** Payload bytes per frame: as much as Tether's largest body on TCP carries (64 KiB, one pipe read). */
const FRAME_PAYLOAD = DEFAULT_MAX_FRAME - PAYLOAD_HEAD_BYTES;

/**
 * Cuts the stream into runs of FRAME_PAYLOAD bytes, as parts of the chunks
 * (no join): `full` is called for each run as it fills, and returns what to
 * write for it; `end` gives the last, shorter run.
 */
function runs(full: (parts: Buffer[]) => Buffer | null): { chunk: (chunk: Buffer) => Buffer[]; end: () => Buffer | null } {
  let parts: Buffer[] = [];
  let size = 0;
  const take = (): Buffer | null => {
    const run = parts;
    parts = [];
    size = 0;
    return run.length === 0 ? null : full(run);
  };
  return {
    chunk: (chunk) => {
      const out: Buffer[] = [];
      for (let at = 0; at < chunk.length; ) {
        const n = Math.min(chunk.length - at, FRAME_PAYLOAD - size);
        parts.push(chunk.subarray(at, at + n));
        size += n;
        at += n;
        const written = size === FRAME_PAYLOAD ? take() : null;
        if (written) out.push(written);
      }
      return out;
    },
    end: take,
  };
}

/**
 * What the sender writes for a chunk of stdin, and at the end. 'hmac' and
 * 'framed' tag runs of FRAME_PAYLOAD bytes, the largest frames Tether sends
 * on TCP (it sends smaller ones when less is queued): in Node's favour.
 */
function outgoing(): { chunk: (chunk: Buffer) => Buffer[]; end: () => Buffer | null } {
  let number = 0;
  if (mode === 'plain') return { chunk: (chunk) => [chunk], end: () => null };
  if (mode === 'hmac') {
    // The chunks go as they come; the runs are only tagged.
    const tagged = runs((parts) => {
      auth.tag(number++, parts);
      return null;
    });
    return { chunk: (chunk) => (tagged.chunk(chunk), [chunk]), end: tagged.end };
  }
  return runs((parts) => encodeAuthenticatedFrame(parts, wireNumber(number), auth.tag(number++, parts)));
}

/** What the receiver does with the bytes that arrive. */
function incoming(): (chunk: Buffer) => void {
  let number = 0;
  if (mode === 'plain') return () => undefined;
  if (mode === 'hmac') return (chunk) => void auth.tag(number++, chunk);
  const reader = new FrameReader(DEFAULT_MAX_FRAME);
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
  const out = outgoing();
  const socket = net.connect(port, '127.0.0.1', () => {
    process.stdin.on('data', (chunk: Buffer) => {
      let room = true;
      for (const bytes of out.chunk(chunk)) room = socket.write(bytes);
      if (!room) {
        process.stdin.pause();
        socket.once('drain', () => process.stdin.resume());
      }
    });
    process.stdin.on('end', () => {
      const last = out.end();
      if (last) socket.end(last);
      else socket.end();
    });
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
