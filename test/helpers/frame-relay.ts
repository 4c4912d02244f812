/**
 * An on-path attacker for tests: a relay between an agent and a hub that
 * sees every frame (split at 0x00, COBS-decoded: bodies are not secret) and
 * can drop, hold, replay, reorder, reflect or inject frames in either
 * direction, or make new ones with a right CRC (it knows the algorithm, not
 * the keys).
 *
 *   tcpRelay(hubPort)        a TCP listener in front of the hub: agents connect to it
 *   new FrameRelay(a, m)     between any two streams (a serial line: two stream pairs)
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { cobsDecodeInPlace, cobsEncodeInto, cobsMaxEncodedLength } from '../../wire/cobs';
import { crc32c } from '../../wire/crc32c';
import { AUTHENTICATED_CRC_PREFIX } from '../../wire/framing';
import { type LoopbackServer, loopbackServer } from './support';

export type Direction = 'toAgent' | 'toMaster';

export interface SeenFrame {
  /** The wire bytes, delimiter included. */
  wire: Buffer;
  /** COBS-decoded: body || trailer. */
  raw: Buffer;
}

/** What a rule does with a frame: pass it, drop it, or send these wire frames instead. */
export type Verdict = 'pass' | 'drop' | Buffer[];

export class FrameRelay {
  readonly seen: Record<Direction, SeenFrame[]> = { toAgent: [], toMaster: [] };
  private readonly rules: Record<Direction, Array<(frame: SeenFrame) => Verdict | undefined>> = { toAgent: [], toMaster: [] };
  private readonly partial: Record<Direction, Buffer> = { toAgent: Buffer.alloc(0), toMaster: Buffer.alloc(0) };

  constructor(
    private readonly agent: Duplex,
    private readonly master: Duplex,
  ) {
    agent.on('data', (chunk: Buffer) => this.carry('toMaster', chunk));
    master.on('data', (chunk: Buffer) => this.carry('toAgent', chunk));
    for (const s of [agent, master]) s.on('error', () => undefined);
    agent.once('close', () => master.destroy());
    master.once('close', () => agent.destroy());
  }

  /** A rule for every frame in `direction`, first one that answers wins; return undefined to let the next rule decide. */
  rule(direction: Direction, decide: (frame: SeenFrame) => Verdict | undefined): void {
    this.rules[direction].push(decide);
  }

  /** Writes wire bytes in `direction` as if they came from the other end. */
  inject(direction: Direction, wire: Buffer): void {
    (direction === 'toAgent' ? this.agent : this.master).write(wire);
  }

  private carry(direction: Direction, chunk: Buffer): void {
    let data = Buffer.concat([this.partial[direction], chunk]);
    for (let zero = data.indexOf(0); zero !== -1; zero = data.indexOf(0)) {
      const wire = data.subarray(0, zero + 1);
      data = data.subarray(zero + 1);
      const raw = Buffer.from(wire.subarray(0, -1));
      const length = cobsDecodeInPlace(raw, raw.length);
      const frame = { wire: Buffer.from(wire), raw: raw.subarray(0, Math.max(0, length)) };
      this.seen[direction].push(frame);
      let verdict: Verdict = 'pass';
      for (const decide of this.rules[direction]) {
        const answer = decide(frame);
        if (answer !== undefined) {
          verdict = answer;
          break;
        }
      }
      if (verdict === 'pass') this.inject(direction, frame.wire);
      else if (verdict !== 'drop') for (const out of verdict) this.inject(direction, out);
    }
    this.partial[direction] = data;
  }
}

/** The body of a decoded authenticated frame (14 bytes of trailer). */
export function bodyOf(frame: SeenFrame): Buffer {
  return frame.raw.subarray(0, frame.raw.length - 14);
}

/**
 * An authenticated frame with `body` and the number and tag of `like` (a
 * frame seen on the wire), and a right CRC: what an attacker can make
 * without the keys.
 */
export function forge(body: Buffer, like: SeenFrame): Buffer {
  const trailer = like.raw.subarray(like.raw.length - 14, like.raw.length - 4);
  const unsent = Buffer.concat([body, trailer]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(crc32c(unsent, crc32c(Buffer.from([AUTHENTICATED_CRC_PREFIX]))));
  const raw = Buffer.concat([unsent, crc]);
  const out = Buffer.alloc(cobsMaxEncodedLength(raw.length) + 1);
  const end = cobsEncodeInto(raw, out, 0);
  return out.subarray(0, end + 1);
}

/** A TCP listener that relays every connection to the hub through a FrameRelay. */
export async function tcpRelay(hubPort: number): Promise<LoopbackServer & { relays: FrameRelay[] }> {
  const relays: FrameRelay[] = [];
  const server = await loopbackServer((agent, track) => {
    const master = net.connect({ host: '127.0.0.1', port: hubPort });
    track(master);
    for (const s of [agent, master]) s.setNoDelay(true);
    relays.push(new FrameRelay(agent, master));
  });
  return { ...server, relays };
}
