/**
 * Helpers for the wire tests: raw protocol peers over real loopback sockets,
 * a hub with its rejections recorded, agents, a fake master, a teeing proxy
 * and a seeded PRNG. Nothing here runs at import time.
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Test } from 'tap';
import { Agent } from '../../agent/agent';
import type { Command } from '../../agent/commands/command';
import { TetherHub, type HubOptions } from '../../master-plugin/hub';
import type { RemoteAgent } from '../../master-plugin/remote';
import { TetherError } from '../../wire/errors';
import { FrameAuth, deriveKeys } from '../../wire/frame-auth';
import { encodeHandshakeFrame, isSequencedBody } from '../../wire/framing';
import { Capability, type Established, PROTOCOL_VERSION, agentHandshake, masterHandshake, proof } from '../../wire/handshake';
import { Link, type LinkOptions } from '../../wire/link';
import {
  type ChallengeParams,
  type Message,
  MsgType,
  type OutgoingMessage,
  decodeMessage,
  encodeChallengeParams,
  encodeMessage,
} from '../../wire/messages';
import { connect } from '../../wire/transport';
import { type LoopbackServer, listenLoopback, loopbackServer, withTimeout } from './support';

/** Keys of a handshake that never happened, for links the tests put together themselves. */
export const TEST_KEYS = deriveKeys(Buffer.from('sesame'), Buffer.alloc(32, 1), Buffer.alloc(32, 2));

/**
 * Two links over the two ends of a byte stream, authenticated as after a
 * handshake (agent on `a`, master on `b`), ready for sessions.
 */
export function authenticatedLinks(a: Duplex, b: Duplex, options: LinkOptions = {}): [Link, Link] {
  const agent = new Link(a, options);
  const master = new Link(b, options);
  agent.authenticate(new FrameAuth(TEST_KEYS, 'agent'), () => 0);
  master.authenticate(new FrameAuth(TEST_KEYS, 'master'), () => 0);
  if (options.maxBody) for (const link of [agent, master]) link.setMaxBody(options.maxBody);
  return [agent, master];
}

/** mulberry32: a small seeded PRNG, so every fuzz run sends the same bytes. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  byte(): number {
    return this.int(256);
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.byte();
    return b;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

/** Bytes CBOR decoders find interesting: heads with long or indefinite arguments, tags, simple values. */
const INTERESTING = [0x00, 0x01, 0x09, 0x0a, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x20, 0x37, 0x38, 0x3b, 0x40, 0x58, 0x5a, 0x5b, 0x5f, 0x60, 0x7b, 0x7f, 0x80, 0x9b, 0x9f, 0xa0, 0xbb, 0xbf, 0xc2, 0xc3, 0xd9, 0xf4, 0xf6, 0xf7, 0xf8, 0xf9, 0xfb, 0xff];

/** One random mutation of `input` (never empty). */
export function mutate(rng: Rng, input: Buffer): Buffer {
  let b = Buffer.from(input);
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    const at = b.length ? rng.int(b.length) : 0;
    switch (rng.int(7)) {
      case 0: // flip a bit
        if (b.length) b[at] ^= 1 << rng.int(8);
        break;
      case 1: // set an interesting byte
        if (b.length) b[at] = rng.pick(INTERESTING);
        break;
      case 2: // insert bytes
        b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(8)), b.subarray(at)]);
        break;
      case 3: // delete bytes
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(8))]);
        break;
      case 4: // truncate
        b = b.subarray(0, at);
        break;
      case 5: // duplicate a slice
        b = Buffer.concat([b, b.subarray(at, at + 1 + rng.int(16))]);
        break;
      default: // random byte
        if (b.length) b[at] = rng.byte();
    }
  }
  return b.length ? b : Buffer.from([rng.byte()]);
}

/** A random CBOR-shaped byte string: plausible heads with random arguments and contents. */
export function randomCborish(rng: Rng, maxLength = 96): Buffer {
  const out: number[] = [];
  const target = 1 + rng.int(maxLength);
  out.push(rng.next() < 0.7 ? rng.pick([...Array(24).keys(), 0x20, 0x21, 0x27, 0x38, 0x39, 0x18]) : rng.byte());
  while (out.length < target) {
    const major = rng.int(8) << 5;
    const info = rng.next() < 0.6 ? rng.int(24) : rng.pick([24, 25, 26, 27, 28, 31]);
    out.push(major | info);
    const argBytes = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0;
    for (let i = 0; i < argBytes; i++) out.push(rng.next() < 0.5 ? 0 : rng.byte());
    if ((major === 0x40 || major === 0x60) && info < 24) for (let i = 0; i < info; i++) out.push(rng.byte());
  }
  return Buffer.from(out);
}

/**
 * One end of a raw protocol connection over a real socket: every frame that
 * passes its checks is decoded (or its decoding error kept) and recorded.
 * Before authentication it sends handshake frames; once authenticated (by
 * agentHandshake through Peer.agent, or authenticateAs) every frame it sends
 * is tagged, and it counts sequence numbers both ways but never ACKs or
 * answers anything by itself: a test says what it does.
 */
export class Peer {
  readonly link: Link;
  readonly received: Message[] = [];
  readonly undecodable: Error[] = [];
  readonly closed: Promise<void>;
  sendSeq = 0;
  /** The sequence number expected next from the other side. */
  expectedSeq = 0;
  private waiters: Array<() => void> = [];

  constructor(readonly socket: net.Socket) {
    socket.on('error', () => undefined);
    this.link = new Link(socket);
    this.closed = new Promise((resolve) => this.link.once('close', () => resolve()));
    this.link.on('frame', (body: Buffer, number: number | null, sequenced: boolean) => {
      if (sequenced && number !== null && number >= this.expectedSeq) this.expectedSeq = number + 1;
      try {
        this.received.push(decodeMessage(body));
      } catch (error) {
        this.undecodable.push(error as Error);
      }
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.link.once('close', () => {
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  static async connect(port: number): Promise<Peer> {
    const socket = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.setNoDelay(true);
    return new Peer(socket);
  }

  /**
   * A hostile or broken agent: connects, authenticates as `name` (a real
   * handshake), and is then the test's to drive; it sends no INFO, ACK or
   * PONG unless told to.
   */
  static async agent(port: number, name: string, secret: string, caps: number = Capability.SELECTIVE_REPEAT): Promise<Peer & { established: Established }> {
    const peer = await Peer.connect(port);
    const established = await agentHandshake(peer.link, { name, secret, caps, maxFrame: 65536 });
    peer.link.setSequenceReference(() => peer.expectedSeq);
    return Object.assign(peer, { established });
  }

  /** Tags frames from now on with the keys of `secret` and the two nonces, as `role`. */
  authenticateAs(role: 'agent' | 'master', secret: string, agentNonce: Buffer, masterNonce: Buffer): void {
    this.link.authenticate(new FrameAuth(deriveKeys(Buffer.from(secret), agentNonce, masterNonce), role), () => this.expectedSeq);
  }

  get isClosed(): boolean {
    return this.link.isClosed;
  }

  /** Sends a link message: a handshake frame before authentication, a tagged link frame after. */
  sendLink(m: OutgoingMessage): void {
    this.sendBody(encodeMessage(m));
  }

  /** Sends a sequenced message with the next sequence number (a handshake frame before authentication). */
  sendSequenced(m: OutgoingMessage): void {
    this.sendBody(encodeMessage(m));
  }

  /** Sends a body as a frame of its kind: tagged (sequenced bodies take the next number) once authenticated. */
  sendBody(body: Buffer): void {
    if (!this.link.isAuthenticated) this.link.write(encodeHandshakeFrame(body));
    else if (isSequencedBody(body)) this.link.write(this.link.encodeSequenced(body, this.sendSeq++));
    else this.link.sendLinkMessage(body);
  }

  /** Acknowledges everything received so far. */
  ack(): void {
    this.sendLink({ type: MsgType.ACK, nextSeq: this.expectedSeq });
  }

  write(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Resolves with the first received message matching `match`, waiting up to `ms`. */
  async waitFor(match: (m: Message) => boolean, ms: number, what = 'a message'): Promise<Message> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.received.find(match);
      if (found) return found;
      if (this.isClosed) throw new Error(`connection closed before ${what}; got ${this.describe()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${ms} ms; got ${this.describe()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  waitClosed(ms: number, what = 'the connection to close'): Promise<void> {
    return withTimeout(this.closed, ms, what);
  }

  describe(): string {
    return JSON.stringify(this.received.map((m) => ('code' in m ? `${String(m.type)}(${m.code})` : String(m.type))));
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export interface HubFixture {
  hub: TetherHub;
  port: number;
  rejected: Array<{ peer: string; error: TetherError }>;
  /** Resolves with the next rejection. */
  nextRejection(ms: number): Promise<TetherError>;
  close(): Promise<void>;
}

export async function startHub(workers: Record<string, string>, opts: Partial<HubOptions> = {}): Promise<HubFixture> {
  const hub = new TetherHub({ workers, ...opts });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const rejected: HubFixture['rejected'] = [];
  hub.on('rejected', (peer: string, error: TetherError) => rejected.push({ peer, error }));
  return {
    hub,
    port: address.port,
    rejected,
    nextRejection(ms) {
      return withTimeout(
        new Promise<TetherError>((resolve) => hub.once('rejected', (_peer: string, error: TetherError) => resolve(error))),
        ms,
        'a rejected connection',
      );
    },
    close: () => hub.close(),
  };
}

/** An agent speaking raw frames: authenticated and its INFO sent, then the test makes it do what it likes. */
export async function rawAgent(fx: HubFixture, name: string, secret: string): Promise<{ peer: Peer; remote: RemoteAgent }> {
  const peer = await Peer.agent(fx.port, name, secret);
  peer.sendSequenced({ type: MsgType.INFO, info: { os: 'raw' } });
  return { peer, remote: await fx.hub.waitForAgent(name, 5000) };
}

/** Commands for the agents of the wire tests. */
export function testCommands(ran: string[] = []): Record<string, Command> {
  return {
    async echo(args, io) {
      ran.push(`echo:${String(args.text)}`);
      await io.stdout(Buffer.from(String(args.text)));
      io.update('rc', 0);
    },
  };
}

export interface AgentFixture {
  agent: Agent;
  logs: string[];
  ran: string[];
  readonly connections: number;
  stop(): Promise<void>;
}

/** An agent for the hub on `port`: over tcp://, or over tls:// trusting the certificate `ca`. */
export function startAgent(port: number, name: string, secret: string, opts: { maxFrame?: number; window?: number; ca?: string } = {}): AgentFixture {
  const kind = opts.ca === undefined ? 'tcp' : 'tls';
  const logs: string[] = [];
  const ran: string[] = [];
  const counter = { connections: 0 };
  const agent = new Agent({
    name,
    secret,
    basedir: '/tmp',
    commands: testCommands(ran),
    masterLabel: `${kind}://127.0.0.1:${port}`,
    maxFrame: opts.maxFrame,
    window: opts.window,
    maxBackoffMs: 200,
    log: (line) => logs.push(line),
    open: () => {
      counter.connections++;
      return connect({ kind, host: '127.0.0.1', port }, { ca: opts.ca });
    },
  });
  const running = agent.run();
  return {
    agent,
    logs,
    ran,
    get connections() {
      return counter.connections;
    },
    async stop() {
      agent.stop();
      await running;
    },
  };
}

/** Runs the echo command on a connected agent and returns what it printed. */
export async function echo(remote: RemoteAgent, text: string): Promise<string> {
  let out = '';
  const result = await withTimeout(
    remote.run('echo', { text }, { stdout: (chunk) => void (out += chunk.toString()) }).result,
    5000,
    `echo ${text}`,
  );
  if (result.failure) throw new Error(`echo failed: ${result.failure.message}`);
  return out;
}

/**
 * The master's half of a handshake, played by a test on `peer` (an agent
 * connected to a fake master): CHALLENGE with `over` parameters, PROOF
 * checked, frame keys, then WELCOME as authenticated link frame 0 unless
 * `welcome` is false (the test sends its own).
 */
export async function masterSide(
  peer: Peer,
  secret: string,
  over: Partial<ChallengeParams> = {},
  welcome = true,
): Promise<{ hello: Extract<Message, { type: typeof MsgType.HELLO }>; params: ChallengeParams }> {
  const hello = (await peer.waitFor((m) => m.type === MsgType.HELLO, 5000, 'HELLO')) as Extract<Message, { type: typeof MsgType.HELLO }>;
  const params: ChallengeParams = {
    version: PROTOCOL_VERSION,
    nonce: randomBytes(32),
    caps: 0,
    maxFrame: 65536,
    keepalive: 10,
    window: 262144,
    ...over,
  };
  const paramsBytes = encodeChallengeParams(params);
  peer.sendLink({ type: MsgType.CHALLENGE, paramsBytes, proof: proof(secret, 'master', hello.raw, paramsBytes) });
  await peer.waitFor((m) => m.type === MsgType.PROOF, 5000, 'PROOF');
  peer.authenticateAs('master', secret, hello.params.nonce, params.nonce);
  peer.link.setMaxBody(params.maxFrame);
  if (welcome) peer.sendLink({ type: MsgType.WELCOME, session: randomBytes(16), resumed: false, nextSeq: 0 });
  return { hello, params };
}

/** A TCP server whose every accepted connection becomes a Peer handed to `onPeer`. */
export async function fakeMaster(onPeer: (peer: Peer) => void): Promise<LoopbackServer & { peers: Peer[] }> {
  const peers: Peer[] = [];
  const server = await loopbackServer((socket) => {
    socket.setNoDelay(true);
    const peer = new Peer(socket);
    peers.push(peer);
    onPeer(peer);
  });
  return { ...server, peers };
}

/** A fake master over a raw socket, authenticated by masterHandshake, and a real agent whose commands are `commands`, its INFO received. */
export async function rawMaster(t: Test, window: number, commands: Record<string, Command>): Promise<Peer> {
  let resolvePeer!: (peer: Peer) => void;
  const accepted = new Promise<Peer>((resolve) => (resolvePeer = resolve));
  const fake = await fakeMaster((peer) => resolvePeer(peer));
  const agent = new Agent({
    name: 'a', secret: 's', basedir: '/tmp', commands, masterLabel: 'fake master', maxBackoffMs: 60_000,
    open: () => connect({ kind: 'tcp', host: '127.0.0.1', port: fake.port }),
  });
  const running = agent.run();
  t.teardown(async () => {
    agent.stop();
    await fake.close();
    await running;
  });
  const peer = await accepted;
  await masterHandshake(peer.link, {
    secretFor: (name) => (name === 'a' ? 's' : undefined),
    caps: 0, maxFrame: 65536, keepalive: 10, window,
    openSession: () => ({ session: randomBytes(16), resumed: false, nextSeq: 0 }),
  });
  await peer.waitFor((m) => m.type === MsgType.INFO, 5000, 'INFO');
  return peer;
}

/** A TCP proxy to `targetPort` that records every byte the client sends. */
export async function teeProxy(targetPort: number): Promise<LoopbackServer & { upstream: Buffer[] }> {
  const upstream: Buffer[] = [];
  const server = await loopbackServer((client, track) => {
    const target = net.connect({ host: '127.0.0.1', port: targetPort });
    track(target);
    for (const s of [client, target]) s.on('error', () => undefined);
    client.on('data', (chunk: Buffer) => {
      upstream.push(Buffer.from(chunk));
      target.write(chunk);
    });
    target.on('data', (chunk: Buffer) => client.write(chunk));
    client.once('close', () => target.destroy());
    target.once('close', () => client.destroy());
  });
  return { ...server, upstream };
}

/** Two connected loopback sockets. */
export async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer();
  const port = await listenLoopback(server);
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve) => client.once('connect', resolve));
  const other = await accepted;
  server.close();
  for (const s of [client, other]) {
    s.setNoDelay(true);
    s.on('error', () => undefined);
  }
  return [client, other];
}
