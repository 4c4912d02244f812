/**
 * Per-frame authentication (PROTOCOL.md section 3.5). Every frame after the
 * handshake carries, after its body, a 2-byte frame number, an 8-byte tag and
 * the CRC:
 *
 *   tag = HMAC-SHA256(key of the sender's direction, number as 8 bytes LE || body), first 8 bytes
 *
 * The keys come from the handshake: HKDF-SHA256 over the worker's secret with
 * both nonces as salt, one key per direction, so a frame cannot be reflected
 * back to its sender, and every connection (a resumed session too) has keys of
 * its own. The number is the frame's sequence number (sequenced frames) or its
 * link-frame number (link frames), sent as its low 16 bits and reconstructed by
 * the receiver; the tag covers all 64 bits, so a frame cannot be replayed or
 * moved to another place in the stream without failing its tag.
 */
import { type KeyObject, createHmac, createSecretKey, hkdfSync, timingSafeEqual } from 'node:crypto';
import { type BodyParts, bodyParts } from './body-parts';

export const TAG_BYTES = 8;
export const NUMBER_BYTES = 2;
const NUMBER_SPAN = 0x1_0000;

export const KEY_LABELS = {
  agentToMaster: 'tether/2 agent to master',
  masterToAgent: 'tether/2 master to agent',
} as const;

export interface SessionKeys {
  agentToMaster: Buffer;
  masterToAgent: Buffer;
}

/** The two frame keys of one connection: HKDF-SHA256(IKM secret, salt nonce_a || nonce_m, info label), 32 bytes each. */
export function deriveKeys(secret: Uint8Array, agentNonce: Uint8Array, masterNonce: Uint8Array): SessionKeys {
  const salt = Buffer.concat([agentNonce, masterNonce]);
  const key = (label: string) => Buffer.from(hkdfSync('sha256', secret, salt, label, 32));
  return { agentToMaster: key(KEY_LABELS.agentToMaster), masterToAgent: key(KEY_LABELS.masterToAgent) };
}

/** The 8 little-endian bytes of a frame number (below 2^53). */
export function numberBytes(number: number): Buffer {
  const out = Buffer.allocUnsafe(8);
  out.writeUInt32LE(number % 0x1_0000_0000, 0);
  out.writeUInt32LE(Math.floor(number / 0x1_0000_0000), 4);
  return out;
}

/** One side's keys: it tags with its own direction's key and checks with the peer's. */
export class FrameAuth {
  private readonly sendKey: KeyObject;
  private readonly receiveKey: KeyObject;

  constructor(keys: SessionKeys, role: 'agent' | 'master') {
    const [send, receive] = role === 'agent' ? [keys.agentToMaster, keys.masterToAgent] : [keys.masterToAgent, keys.agentToMaster];
    this.sendKey = createSecretKey(send);
    this.receiveKey = createSecretKey(receive);
  }

  /** The tag of a frame this side sends. */
  tag(number: number, body: Uint8Array | BodyParts): Buffer {
    return computeTag(this.sendKey, number, body);
  }

  /** Whether a received frame's tag is right, compared in constant time. */
  verify(number: number, body: Uint8Array, tag: Uint8Array): boolean {
    return tag.length === TAG_BYTES && timingSafeEqual(computeTag(this.receiveKey, number, body), tag);
  }
}

function computeTag(key: KeyObject, number: number, body: Uint8Array | BodyParts): Buffer {
  const hmac = createHmac('sha256', key).update(numberBytes(number));
  for (const part of bodyParts(body)) hmac.update(part);
  return hmac.digest().subarray(0, TAG_BYTES);
}

/** The 16 bits of a frame number that go on the wire. */
export function wireNumber(number: number): number {
  return number % NUMBER_SPAN;
}

/**
 * A sequenced frame's full number from its low 16 bits: the one nearest to
 * the number the receiver expects next (a sender keeps far fewer than 2^15
 * frames unacknowledged, so copies and frames ahead are within reach).
 */
export function nearestNumber(low: number, expected: number): number {
  const offset = ((((low - expected) % NUMBER_SPAN) + NUMBER_SPAN + NUMBER_SPAN / 2) % NUMBER_SPAN) - NUMBER_SPAN / 2;
  const number = expected + offset;
  return number < 0 ? number + NUMBER_SPAN : number;
}

/**
 * A link frame's full number from its low 16 bits: the first at or after the
 * next one expected (link frames are never sent twice; lost ones leave gaps,
 * and an older one replayed maps to a number its tag does not fit).
 */
export function nextNumber(low: number, expected: number): number {
  return expected + ((((low - expected) % NUMBER_SPAN) + NUMBER_SPAN) % NUMBER_SPAN);
}
