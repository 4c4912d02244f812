/**
 * The front door: what the master lets in before a peer has authenticated.
 *
 * Contract (wire/transport.ts and master-plugin/hub.ts call it, nothing else):
 * - arrive(socket) is called at TCP accept, before TLS. From then on the
 *   connection is pending and its timer runs: unless it authenticates within
 *   the handshake timeout (TLS and the Tether handshake together), its socket
 *   is destroyed.
 * - At most maxUnauthenticated connections are pending in all, and at most
 *   maxUnauthenticatedPerAddress from one remote address. An arrival past a
 *   cap is let in and makes room by dropping a pending connection (of its own
 *   address when that is the cap reached; as sshd's MaxStartups does, a full
 *   door drops rather than refuses): the one that has made the least progress
 *   (no TLS yet, then no HELLO yet, then the rest), oldest first. A real agent
 *   sends HELLO at once, so a flood of idle connections only ever drops its
 *   own; and until it has, a newcomer is the last of its rank to go.
 * - The hub marks progress (Visitor.reached) and says when the peer has
 *   authenticated (Visitor.authenticated): it then no longer counts. A socket
 *   that closes leaves by itself.
 * - A drop destroys the socket at once (nothing lingers to flush), after
 *   Visitor.onDrop, if the hub set one, has written a last ERROR. Visitor.dropped
 *   says why, for the hub's 'rejected' event.
 * - Drops are logged at most one line per kind and interval, with counts.
 *
 * Memory: a pending connection costs its socket (TLS state included) plus a
 * Visitor, its timer and two set entries, a few hundred bytes; the Link the
 * hub makes for it holds a 1 KiB frame buffer until the handshake ends.
 */
import type * as net from 'node:net';
import { TetherError } from '../wire/errors';
import { RateLimitedLog } from './rate-limited-log';

export const DEFAULT_HANDSHAKE_TIMEOUT_SECONDS = 10;
/**
 * Defaults of the caps. A handshake takes milliseconds, so 256 pending at
 * once is far more than a farm reconnecting after a restart needs, and keeps
 * the master well inside the usual 1024 file descriptors; 32 per address
 * lets a farm behind one NAT reconnect together, and since a full door drops
 * rather than refuses, going past it only delays the dropped agent's retry.
 */
export const DEFAULT_MAX_UNAUTHENTICATED = 256;
export const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS = 32;

/** How far a pending connection got; the least advanced is dropped first. */
export const Progress = { ACCEPTED: 0, READY: 1, HELLO: 2 } as const;
export type Progress = (typeof Progress)[keyof typeof Progress];

const PROGRESS_TEXT: Record<Progress, string> = { 0: 'before TLS', 1: 'before HELLO', 2: 'after HELLO' };

export interface FrontDoorOptions {
  handshakeTimeoutMs: number;
  maxUnauthenticated: number;
  maxUnauthenticatedPerAddress: number;
  log: (line: string) => void;
}

/** A connection waiting at the door. */
export class Visitor {
  progress: Progress = Progress.ACCEPTED;
  /** Why the front door dropped it, once it has. */
  dropped: TetherError | null = null;
  /** Writes a last ERROR before the socket is destroyed (set by the hub once there is a link). */
  onDrop: ((why: TetherError) => void) | null = null;

  constructor(
    readonly socket: net.Socket,
    readonly address: string,
    readonly peer: string,
    private readonly door: FrontDoor,
  ) {}

  reached(progress: Progress): void {
    if (progress > this.progress) this.progress = progress;
  }

  /** The peer proved its secret: it no longer counts against the caps, and its timer stops. */
  authenticated(): void {
    this.door.leave(this);
  }
}

/** The remote address a cap counts by (an IPv4 peer on a dual-stack socket as plain IPv4). */
function addressOf(socket: net.Socket): string {
  return (socket.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '');
}

export class FrontDoor {
  /** Pending connections, oldest first (a Set iterates in insertion order). */
  private readonly pending = new Set<Visitor>();
  private readonly byAddress = new Map<string, Set<Visitor>>();
  private readonly timers = new Map<Visitor, NodeJS.Timeout>();
  private readonly drops: RateLimitedLog;

  constructor(private readonly opts: FrontDoorOptions) {
    this.drops = new RateLimitedLog(opts.log);
  }

  arrive(socket: net.Socket): Visitor {
    const address = addressOf(socket);
    const visitor = new Visitor(socket, address, `${address}:${socket.remotePort}`, this);
    const mine = this.byAddress.get(address) ?? new Set<Visitor>();
    if (mine.size >= this.opts.maxUnauthenticatedPerAddress) {
      this.makeRoom(mine, `${mine.size} from ${address} await authentication, at most ${this.opts.maxUnauthenticatedPerAddress}`);
    } else if (this.pending.size >= this.opts.maxUnauthenticated) {
      this.makeRoom(this.pending, `${this.pending.size} connections await authentication, at most ${this.opts.maxUnauthenticated}`);
    }
    this.pending.add(visitor);
    mine.add(visitor);
    this.byAddress.set(address, mine);
    const seconds = this.opts.handshakeTimeoutMs / 1000;
    const timeout = () =>
      this.drop(visitor, new TetherError('HANDSHAKE_TIMEOUT', `not authenticated within ${seconds} s of connecting`), 'connections dropped for not authenticating in time');
    this.timers.set(visitor, setTimeout(timeout, this.opts.handshakeTimeoutMs));
    socket.once('close', () => this.leave(visitor));
    return visitor;
  }

  leave(visitor: Visitor): void {
    if (!this.pending.delete(visitor)) return;
    clearTimeout(this.timers.get(visitor));
    this.timers.delete(visitor);
    const mine = this.byAddress.get(visitor.address)!;
    mine.delete(visitor);
    if (mine.size === 0) this.byAddress.delete(visitor.address);
  }

  /** Stops every timer and logs the drop counts not logged yet (the hub is closing). */
  close(): void {
    for (const visitor of [...this.pending]) this.leave(visitor);
    this.drops.flush();
  }

  /** Drops the least advanced of `among`, oldest first. */
  private makeRoom(among: Set<Visitor>, why: string): void {
    let victim: Visitor | undefined;
    for (const v of among) {
      if (!victim || v.progress < victim.progress) victim = v;
      if (victim.progress === Progress.ACCEPTED) break;
    }
    if (victim) this.drop(victim, new TetherError('FLOW_CONTROL', `dropped ${PROGRESS_TEXT[victim.progress]} to make room: ${why}`), 'connections dropped to make room');
  }

  private drop(visitor: Visitor, why: TetherError, kind: string): void {
    if (!this.pending.has(visitor)) return;
    this.leave(visitor);
    visitor.dropped = why;
    this.drops.note(kind, `connection from ${visitor.peer}: ${why.message}`);
    try {
      visitor.onDrop?.(why);
    } finally {
      visitor.socket.destroy();
    }
  }
}
