/**
 * The handshake: version and capability negotiation, and mutual
 * authentication by HMAC-SHA256 challenge-response over a per-worker secret.
 *
 *   agent  -> master  HELLO      versions, name, agent nonce, capabilities, max frame
 *   master -> agent   CHALLENGE  chosen parameters (with master nonce), master proof
 *   agent  -> master  PROOF      agent proof
 *   master -> agent   WELCOME    session id, resumed?, next sequence number expected
 *
 * master proof = HMAC(secret, "tether/2 master" 0x00 || HELLO body || parameters)
 * agent proof  = HMAC(secret, "tether/2 agent"  0x00 || HELLO body || parameters)
 *
 * Both proofs cover both nonces and everything negotiated, so neither can be
 * replayed or bent to other parameters. The agent checks the master's proof
 * before it proves anything itself, so an impostor master learns nothing.
 * Once a side has checked the other's proof it derives the frame keys
 * (frame-auth.ts): WELCOME and every frame after it are authenticated.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { TetherError, type ErrorName, errorName } from './errors';
import { FrameAuth, deriveKeys } from './frame-auth';
import type { Link } from './link';
import { printable } from './printable';
import {
  type ChallengeParams,
  type HelloParams,
  type Message,
  MsgType,
  NONCE_BYTES,
  PAYLOAD_HEAD_BYTES,
  SESSION_ID_BYTES,
  decodeMessage,
  encodeChallengeParams,
  encodeMessage,
} from './messages';

/** Version 2: every frame after the handshake is authenticated (version 1 only had a CRC). */
export const PROTOCOL_VERSION = 2;
export const Capability = { DEFLATE: 1, RESUME: 2, SELECTIVE_REPEAT: 4 } as const;
/**
 * On TCP and TLS: room for 64 KiB of payload and its head, so one 64 KiB read
 * of a pipe or a file goes out as one frame (at 65536 it took two: 38 % fewer
 * frames, and about 15 % less CPU per byte on each side, measured).
 */
export const DEFAULT_MAX_FRAME = 64 * 1024 + PAYLOAD_HEAD_BYTES;
/** The smallest frame body a peer may offer: room for every fixed-size message and a FRAGMENT piece. */
export const MIN_MAX_FRAME = 64;
/** Default on lossy (serial) lines: 512-byte frames cost under 3 % and survive noise. */
export const SERIAL_MAX_FRAME = 512;
export const DEFAULT_WINDOW = 256 * 1024;
export const DEFAULT_KEEPALIVE_SECONDS = 10;
/**
 * The keepalive and window an agent takes from the master's CHALLENGE, and a
 * master may be configured with (PROTOCOL.md 6.3). The upper bounds are far
 * beyond any deployment (the defaults are 10 s and 256 KiB) and short of what
 * breaks: at an hour's interval a dead peer already takes three hours to find,
 * and three intervals in milliseconds fit a 32-bit timer (Node's overflowed at
 * 2^31 ms and fired every millisecond); 16 MiB covers the bandwidth-delay
 * product of 1 Gbit/s over 130 ms, and keeps what a master can push at one
 * stream of an agent (two windows) to 32 MiB, not the 700 MB a window of 2^40
 * let it.
 */
export const MIN_KEEPALIVE_SECONDS = 1;
export const MAX_KEEPALIVE_SECONDS = 3600;
export const MIN_WINDOW = 1024;
export const MAX_WINDOW = 16 * 1024 * 1024;
/** How long a master keeps a dropped agent's session for it to resume. */
export const DEFAULT_GRACE_SECONDS = 300;
/**
 * The longest grace: a day. Node's timers stop at 2^31 - 1 ms (24.8 days),
 * and one set beyond fires at once: a grace of a month expired every
 * dropped session the moment it dropped.
 */
export const MAX_GRACE_SECONDS = 24 * 3600;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

export function proof(secret: string, role: 'master' | 'agent', helloBody: Buffer, params: Buffer): Buffer {
  return createHmac('sha256', secret).update(`tether/${PROTOCOL_VERSION} ${role}\0`).update(helloBody).update(params).digest();
}

/** The link's frame keys once the proofs are checked: from the secret and both nonces. */
function frameAuth(secret: string, hello: HelloParams, params: ChallengeParams, role: 'agent' | 'master'): FrameAuth {
  return new FrameAuth(deriveKeys(Buffer.from(secret, 'utf8'), hello.nonce, params.nonce), role);
}

function inRange(n: number, min: number, max: number): boolean {
  return n >= min && n <= max;
}

/**
 * Why every agent would refuse a master's keepalive and window (PROTOCOL.md
 * 6.4, the agent's check 3), or null: the agent's check, and the hub's on its
 * options, so that a program embedding the hub learns it when it builds one,
 * not from each agent's UNSUPPORTED_VERSION.
 */
export function unusableChoice(keepalive: number, window: number): string | null {
  if (!inRange(keepalive, MIN_KEEPALIVE_SECONDS, MAX_KEEPALIVE_SECONDS)) {
    return `keepalive ${keepalive} s (agents take ${MIN_KEEPALIVE_SECONDS} to ${MAX_KEEPALIVE_SECONDS})`;
  }
  if (!inRange(window, MIN_WINDOW, MAX_WINDOW)) return `window ${window} bytes (agents take ${MIN_WINDOW} to ${MAX_WINDOW})`;
  return null;
}

function sameProof(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Resolves with the next link message; rejects on close, timeout or a sequenced frame. */
function nextMessage(link: Link, timeoutMs: number): Promise<Message> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      link.off('frame', onFrame);
      link.off('close', onClose);
    };
    const onFrame = (body: Buffer, _number: number | null, sequenced: boolean) => {
      cleanup();
      if (sequenced) {
        reject(new TetherError('NOT_AUTHENTICATED', 'a session message arrived before authentication'));
        return;
      }
      let message: Message;
      try {
        message = decodeMessage(body);
      } catch (error) {
        reject(error);
        return;
      }
      resolve(message);
    };
    const onClose = (error: Error | null) => {
      cleanup();
      reject(new TetherError('AUTH_FAILED', `connection closed during the handshake${error ? `: ${error.message}` : ''}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new TetherError('HANDSHAKE_TIMEOUT', `no handshake reply within ${timeoutMs} ms`));
    }, timeoutMs);
    link.on('frame', onFrame);
    link.once('close', onClose);
    link.resumeReading();
  });
}

/** Sends ERROR (unless the peer sent it) and closes the link; returns the error for throwing. */
export function failLink(link: Link, error: TetherError): TetherError {
  if (!link.isClosed && !error.fromPeer) {
    const body = encodeMessage({ type: MsgType.ERROR, code: error.wireCode, message: error.message });
    if (link.isAuthenticated) link.sendLinkMessage(body);
    else link.sendHandshake(body);
  }
  link.close(error);
  return error;
}

/** Runs handshake steps; any protocol failure is reported to the peer and closes the link. */
async function closingOnFailure<T>(link: Link, steps: () => Promise<T>): Promise<T> {
  try {
    return await steps();
  } catch (error) {
    throw error instanceof TetherError ? failLink(link, error) : error;
  }
}

function peerError(m: Extract<Message, { type: typeof MsgType.ERROR }>): TetherError {
  const name: ErrorName = errorName(m.code) ?? 'INTERNAL';
  return new TetherError(name, `peer: ${printable(m.message)}`, true);
}

function expect<T extends Message['type']>(m: Message, type: T): Extract<Message, { type: T }> {
  if (m.type === MsgType.ERROR) throw peerError(m);
  if (m.type !== type) {
    throw new TetherError('NOT_AUTHENTICATED', `expected handshake message ${String(type)}, got ${String(m.type)}`);
  }
  return m as Extract<Message, { type: T }>;
}

export interface Established {
  session: Buffer;
  resumed: boolean;
  /** The next sequence number the peer expects from us. */
  peerNextSeq: number;
  params: ChallengeParams;
}

export interface AgentHandshakeOptions {
  name: string;
  secret: string;
  caps: number;
  maxFrame: number;
  resume?: { session: Buffer; nextSeq: number };
  /** The largest window this agent takes (HELLO key 10, PROTOCOL.md 6.3); absent: the master's choice. */
  window?: number;
  timeoutMs?: number;
}

/**
 * What the master chose that this agent did not offer, and which side to
 * upgrade, as the master's UNSUPPORTED_VERSION says; null if nothing. A
 * newer version is the agent's to catch up with; anything else breaks the
 * negotiation rules (PROTOCOL.md 6.3), a fault of the master.
 */
function unoffered(p: ChallengeParams, opts: AgentHandshakeOptions): string | null {
  if (p.version !== PROTOCOL_VERSION) {
    return `the master chose protocol version ${p.version}; this agent speaks only ${PROTOCOL_VERSION}: upgrade ${p.version > PROTOCOL_VERSION ? 'tether-agent' : 'the master'}`;
  }
  const extra = p.caps & ~opts.caps;
  if (extra !== 0) return `the master granted capability bits ${extra}, which this agent did not offer (it offered ${opts.caps}): upgrade the master`;
  if (p.maxFrame > opts.maxFrame) return `the master chose max frame ${p.maxFrame}, above the ${opts.maxFrame} this agent offered: upgrade the master`;
  if (p.maxFrame < MIN_MAX_FRAME) return `the master chose max frame ${p.maxFrame}, below the least, ${MIN_MAX_FRAME}: upgrade the master`;
  if (opts.window !== undefined && p.window > opts.window) {
    return `the master chose window ${p.window}, above the ${opts.window} this agent asked for: upgrade the master`;
  }
  return null;
}

export function agentHandshake(link: Link, opts: AgentHandshakeOptions): Promise<Established> {
  return closingOnFailure(link, () => agentSteps(link, opts));
}

async function agentSteps(link: Link, opts: AgentHandshakeOptions): Promise<Established> {
  const timeout = opts.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const hello: HelloParams = {
    versionMin: PROTOCOL_VERSION,
    versionMax: PROTOCOL_VERSION,
    name: opts.name,
    nonce: randomBytes(NONCE_BYTES),
    caps: opts.caps,
    maxFrame: opts.maxFrame,
    resume: opts.resume,
    window: opts.window,
  };
  const helloBody = encodeMessage({ type: MsgType.HELLO, params: hello });
  link.sendHandshake(helloBody);
  const challenge = expect(await nextMessage(link, timeout), MsgType.CHALLENGE);
  if (!sameProof(challenge.proof, proof(opts.secret, 'master', helloBody, challenge.paramsBytes))) {
    throw new TetherError('AUTH_FAILED', 'the master failed authentication (wrong secret, or not the real master)');
  }
  const p = challenge.params;
  const refusal = unoffered(p, opts);
  if (refusal !== null) {
    throw new TetherError('UNSUPPORTED_VERSION', refusal);
  }
  const unusable = unusableChoice(p.keepalive, p.window);
  if (unusable !== null) throw new TetherError('UNSUPPORTED_VERSION', `unusable parameters from the master: ${unusable}`);
  // The master is authentic: from now on frames are authenticated (the master may still
  // refuse the PROOF with a handshake ERROR), and frames after WELCOME (a resumed session's
  // retransmissions) may come in the same read, so take them at the agreed size.
  link.sendHandshake(encodeMessage({ type: MsgType.PROOF, proof: proof(opts.secret, 'agent', helloBody, challenge.paramsBytes) }));
  link.authenticate(frameAuth(opts.secret, hello, p, 'agent'), () => opts.resume?.nextSeq ?? 0, true);
  link.setMaxBody(p.maxFrame);
  const welcome = expect(await nextMessage(link, timeout), MsgType.WELCOME);
  return { session: welcome.session, resumed: welcome.resumed, peerNextSeq: welcome.nextSeq, params: p };
}

export interface MasterHandshakeOptions {
  /** The secret of a worker name, or undefined if there is no such worker. */
  secretFor(name: string): string | undefined;
  caps: number;
  /** At least MIN_MAX_FRAME (and keepalive and window within their bounds): agents refuse anything else. */
  maxFrame: number;
  keepalive: number;
  window: number;
  timeoutMs?: number;
  /** Milliseconds before a failed proof is answered (or until the peer leaves): costs that connection only. */
  failureDelayMs?: number;
  /** Decides the session once the agent is authenticated (new, or resumed). */
  openSession(name: string, hello: HelloParams, caps: number): { session: Buffer; resumed: boolean; nextSeq: number };
}

export interface AgentIdentity extends Established {
  name: string;
  hello: HelloParams;
}

/** The secret an unknown worker name is challenged with: random, never sent, never shared. */
const DECOY_SECRET = randomBytes(32).toString('base64');

export function masterHandshake(link: Link, opts: MasterHandshakeOptions): Promise<AgentIdentity> {
  return closingOnFailure(link, () => masterSteps(link, opts));
}

async function masterSteps(link: Link, opts: MasterHandshakeOptions): Promise<AgentIdentity> {
  const timeout = opts.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const hello = expect(await nextMessage(link, timeout), MsgType.HELLO);
  const h = hello.params;
  // Its CDDL rule, as the decoder holds the nonce to 32 bytes: granting more than the agent
  // offered would only make it fail the handshake, for a reason it cannot see.
  if (h.maxFrame < MIN_MAX_FRAME) throw new TetherError('BAD_MESSAGE', `hello max frame must be at least ${MIN_MAX_FRAME}, not ${h.maxFrame}`);
  if (h.window !== undefined && !inRange(h.window, MIN_WINDOW, MAX_WINDOW)) {
    throw new TetherError('BAD_MESSAGE', `hello window must be from ${MIN_WINDOW} to ${MAX_WINDOW}, not ${h.window}`);
  }
  if (h.versionMax < PROTOCOL_VERSION) {
    throw new TetherError(
      'UNSUPPORTED_VERSION',
      `the agent speaks protocol version ${h.versionMax}, which authenticates only the handshake; this master needs version ${PROTOCOL_VERSION} (every frame authenticated): upgrade tether-agent`,
    );
  }
  if (h.versionMin > PROTOCOL_VERSION) {
    throw new TetherError('UNSUPPORTED_VERSION', `agent speaks versions ${h.versionMin}-${h.versionMax}, master speaks ${PROTOCOL_VERSION}: upgrade tether-master`);
  }
  // An unknown name is challenged like a known one, with a secret nobody has, and fails at
  // PROOF exactly as a wrong secret does: the answer does not tell which names exist.
  const secret = opts.secretFor(h.name) ?? DECOY_SECRET;
  const params: ChallengeParams = {
    version: PROTOCOL_VERSION,
    nonce: randomBytes(NONCE_BYTES),
    caps: h.caps & opts.caps,
    maxFrame: Math.min(h.maxFrame, opts.maxFrame),
    keepalive: opts.keepalive,
    // The agent's bound, if it set one: what it cannot hold of one stream's data.
    window: Math.min(opts.window, h.window ?? opts.window),
  };
  const paramsBytes = encodeChallengeParams(params);
  link.sendHandshake(encodeMessage({ type: MsgType.CHALLENGE, paramsBytes, proof: proof(secret, 'master', hello.raw, paramsBytes) }));
  const agentProof = expect(await nextMessage(link, timeout), MsgType.PROOF);
  if (!sameProof(agentProof.proof, proof(secret, 'agent', hello.raw, paramsBytes))) {
    await new Promise<void>((done) => {
      const timer = setTimeout(done, opts.failureDelayMs ?? 0);
      link.once('close', () => {
        clearTimeout(timer);
        done();
      });
    });
    throw new TetherError('AUTH_FAILED', `unknown worker '${printable(h.name)}' or wrong secret`);
  }
  const opened = opts.openSession(h.name, h, params.caps);
  link.authenticate(frameAuth(secret, h, params, 'master'), () => opened.nextSeq);
  link.setMaxBody(params.maxFrame);
  link.sendLinkMessage(encodeMessage({ type: MsgType.WELCOME, session: opened.session, resumed: opened.resumed, nextSeq: opened.nextSeq }));
  return { name: h.name, hello: h, session: opened.session, resumed: opened.resumed, peerNextSeq: h.resume?.nextSeq ?? 0, params };
}

/** What the negotiated parameters make of a new session (its options, as session.ts takes them). */
export function sessionOptions(params: ChallengeParams) {
  return {
    maxBody: params.maxFrame,
    keepalive: params.keepalive,
    window: params.window,
    deflate: (params.caps & Capability.DEFLATE) !== 0,
    selective: (params.caps & Capability.SELECTIVE_REPEAT) !== 0,
    resumable: (params.caps & Capability.RESUME) !== 0,
  };
}

export function newSessionId(): Buffer {
  return randomBytes(SESSION_ID_BYTES);
}

