/**
 * TetherHub: the master side as a library. It listens for agents,
 * authenticates them, and hands each one out as a RemoteAgent. The Buildbot
 * bridge, `tether-master exec` and the demo all use it.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TetherError, describeError } from '../wire/errors';
import {
  Capability,
  DEFAULT_GRACE_SECONDS,
  DEFAULT_KEEPALIVE_SECONDS,
  DEFAULT_MAX_FRAME,
  DEFAULT_WINDOW,
  MAX_GRACE_SECONDS,
  failLink,
  masterHandshake,
  newSessionId,
  sessionOptions,
  unusableChoice,
} from '../wire/handshake';
import { Link } from '../wire/link';
import { printableLog } from '../wire/printable';
import { Session } from '../wire/session';
import { type Endpoint, type Listener, type NetEndpoint, describeEndpoint, listen, parseEndpoint } from '../wire/transport';
import { AgentConnection } from './agent-connection';
import { awaitAgent } from './await-agent';
import {
  DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
  DEFAULT_MAX_UNAUTHENTICATED,
  DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
  FrontDoor,
  Progress,
  type Visitor,
} from './front-door';
import { RateLimitedLog } from './rate-limited-log';
import type { RemoteAgent } from './remote';

export const COMPRESS_CHOICES = ['serial', 'always', 'never'] as const;
export type CompressWhere = (typeof COMPRESS_CHOICES)[number];

export interface HubOptions {
  /** Worker name → shared secret. */
  workers: Record<string, string>;
  /** Offer to resume sessions across dropped links (default true). */
  resume?: boolean;
  /** Seconds a dropped agent's session (and its Buildbot connection) is kept for it to come back (default 300, at most MAX_GRACE_SECONDS: a day). */
  grace?: number;
  /** Seconds between keepalive pings; a peer silent for three is dead. */
  keepalive?: number;
  maxFrame?: number;
  window?: number;
  /**
   * Where to offer deflate: 'serial' (default: lossy lines only, where the
   * line is the bottleneck), 'always' (TCP and TLS too: for agents behind a
   * slow or metered network), 'never'.
   */
  compress?: CompressWhere;
  /** PEM files for tls:// listeners. */
  cert?: string;
  key?: string;
  /** Seconds from accepting a tcp:// or tls:// connection (TLS included) to its authentication (default 10). */
  handshakeTimeout?: number;
  /** Connections awaiting authentication at once, in all (default 256) and from one address (default 32): see front-door.ts. */
  maxUnauthenticated?: number;
  maxUnauthenticatedPerAddress?: number;
  /** Seconds before a failed proof is answered: slows guessing on that connection only (default 2). */
  failureDelay?: number;
  /** Where log lines go; peer text in them is escaped. */
  log?: (line: string) => void;
}

export const DEFAULT_FAILURE_DELAY_SECONDS = 2;

const INFO_TIMEOUT_MS = 10_000;

/**
 * The third argument of the hub's 'rejected' event (peer, error, who): the
 * worker name the agent claimed, when it got that far, and whether that name
 * is configured (then a failed handshake means a wrong secret).
 */
export interface RejectedWorker {
  worker?: string;
  known: boolean;
}

/** What the transport knows about an accepted stream (hub.accept's third argument). */
export interface AcceptOptions {
  /** Only this worker may authenticate on the stream (a serial line bound to one worker). */
  worker?: string;
  /** The line may lose or corrupt bytes (serial): the session retransmits. */
  lossy?: boolean;
  /** The line rate, when the transport knows it. */
  bytesPerSecond?: number;
  /** The connection's place at the front door (tcp:// and tls:// listeners). */
  visitor?: Visitor;
}

/** Secrets shorter than this are warned about: 16 random characters hold about 96 bits or more. */
export const MIN_SECRET_LENGTH = 16;

export class TetherHub extends EventEmitter {
  private readonly servers: Listener[] = [];
  private readonly agents = new Map<string, AgentConnection>();
  /** Resumable sessions by id (hex), attached or waiting for their agent. */
  private readonly sessions = new Map<string, AgentConnection>();
  private readonly links = new Set<Link>();
  private readonly log: (line: string) => void;
  private readonly frontDoor: FrontDoor;
  /** Failed handshakes: anyone can cause them at will. */
  private readonly rejections: RateLimitedLog;
  /** Per worker, the authenticated connection whose INFO has not come yet (admit()). */
  private readonly admitting = new Map<string, AgentConnection>();
  private workers: Record<string, string> = {};

  constructor(private readonly options: HubOptions) {
    super();
    const unusable = unusableChoice(options.keepalive ?? DEFAULT_KEEPALIVE_SECONDS, options.window ?? DEFAULT_WINDOW);
    if (unusable !== null) throw new RangeError(`TetherHub: every agent would refuse ${unusable}`);
    const grace = options.grace ?? DEFAULT_GRACE_SECONDS;
    if (!(grace >= 0 && grace <= MAX_GRACE_SECONDS)) throw new RangeError(`TetherHub: grace ${grace} s is not from 0 to ${MAX_GRACE_SECONDS}`);
    this.log = printableLog(options.log);
    this.setWorkers(options.workers);
    this.frontDoor = new FrontDoor({
      handshakeTimeoutMs: (options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_SECONDS) * 1000,
      maxUnauthenticated: options.maxUnauthenticated ?? DEFAULT_MAX_UNAUTHENTICATED,
      maxUnauthenticatedPerAddress: options.maxUnauthenticatedPerAddress ?? DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
      log: this.log,
    });
    this.rejections = new RateLimitedLog(this.log);
  }

  /**
   * Starts listening; resolves with the bound address (port 0 picks a free one).
   * A serial:DEVICE?baud=N&worker=NAME URL opens the device for that one worker.
   */
  listen(url: `tcp://${string}` | `tls://${string}`): Promise<NetEndpoint>;
  listen(url: string): Promise<Endpoint>;
  async listen(url: string): Promise<Endpoint> {
    const endpoint = parseEndpoint(url, 'listen');
    let listener: Listener;
    if (endpoint.kind === 'serial') {
      // Loaded only for serial lines: it brings serialport's native binding.
      const { listenSerial } = await import('./serial-listener');
      listener = await listenSerial(endpoint, { log: this.log }, (opened, peer) =>
        this.accept(opened.transport, peer, { worker: endpoint.worker, lossy: opened.lossy, bytesPerSecond: opened.bytesPerSecond }),
      );
    } else {
      const onAccept = (socket: Socket) => this.frontDoor.arrive(socket);
      listener = await listen(endpoint, { cert: this.options.cert, key: this.options.key, onAccept }, (stream, peer, visitor) =>
        this.accept(stream, peer, { visitor }),
      );
    }
    this.servers.push(listener);
    if (this.servers.length === 1) this.warnAboutSecrets();
    this.log(`listening on ${describeEndpoint(listener.address)}`);
    return listener.address;
  }

  /** Replaces the worker table; connected agents that are no longer in it are disconnected. */
  setWorkers(workers: Record<string, string>): void {
    this.workers = { ...workers };
    if (this.servers.length > 0) this.warnAboutSecrets();
    for (const [name, agent] of this.agents) {
      if (!(name in this.workers)) agent.close(new TetherError('AUTH_FAILED', `worker '${name}' was removed`));
    }
  }

  /**
   * Anyone may ask for the master's proof under a worker's name and test
   * guesses against it offline: only a secret too long to guess protects the
   * handshake. Said once the hub listens (not for a run that fails before).
   */
  private warnAboutSecrets(): void {
    for (const [name, secret] of Object.entries(this.workers)) {
      if (secret.length < MIN_SECRET_LENGTH) {
        this.log(`warning: worker '${name}' has a short secret (${secret.length} characters); it can be guessed offline: use ${MIN_SECRET_LENGTH} or more random characters (openssl rand -hex 32)`);
      }
    }
  }

  connected(): RemoteAgent[] {
    return [...this.agents.values()];
  }

  /**
   * Resolves with the named agent once it is connected and has reported its
   * info. Only an authenticated agent ends the wait; the error when it runs
   * out says how many attempts under that name failed authentication.
   */
  waitForAgent(name: string, timeoutMs: number): Promise<RemoteAgent> {
    return awaitAgent(this, name, { timeoutMs });
  }

  /** Compression pays on slow lines; on a LAN it would mostly cost the agent CPU. */
  private offersDeflate(link: Link): boolean {
    const where = this.options.compress ?? 'serial';
    return where === 'always' || (where === 'serial' && link.lossy);
  }

  /** Accepts a byte stream from any transport (the TCP/TLS listeners, a serial line, a test). */
  accept(stream: Duplex, peer: string, options: AcceptOptions = {}): void {
    const link = new Link(stream, { lossy: options.lossy, bytesPerSecond: options.bytesPerSecond });
    const allowed = (name: string) => options.worker === undefined || name === options.worker;
    this.links.add(link);
    link.once('close', () => this.links.delete(link));
    const visitor = options.visitor;
    visitor?.reached(Progress.READY);
    if (visitor) visitor.onDrop = (why) => failLink(link, why);
    let claimed: string | undefined;
    masterHandshake(link, {
      secretFor: (name) => {
        claimed = name;
        visitor?.reached(Progress.HELLO);
        if (!allowed(name)) return undefined;
        return Object.prototype.hasOwnProperty.call(this.workers, name) ? this.workers[name] : undefined;
      },
      caps:
        Capability.SELECTIVE_REPEAT |
        (this.offersDeflate(link) ? Capability.DEFLATE : 0) |
        (this.options.resume === false ? 0 : Capability.RESUME),
      maxFrame: this.options.maxFrame ?? DEFAULT_MAX_FRAME,
      keepalive: this.options.keepalive ?? DEFAULT_KEEPALIVE_SECONDS,
      window: this.options.window ?? DEFAULT_WINDOW,
      failureDelayMs: (this.options.failureDelay ?? DEFAULT_FAILURE_DELAY_SECONDS) * 1000,
      openSession: (name, hello, caps) => {
        const waiting = (caps & Capability.RESUME) !== 0 && hello.resume ? this.resumable(name, hello.resume.session) : undefined;
        if (!waiting) return { session: newSessionId(), resumed: false, nextSeq: 0 };
        // The agent has left its old link, though this side may not have noticed (a serial
        // line, a half-open socket): it is authenticated, so the session moves to the new one.
        waiting.session.dropLink(new TetherError('PEER_TIMEOUT', 'the agent resumed the session on a new connection'));
        return { session: hello.resume!.session, resumed: true, nextSeq: waiting.session.nextRecvSeq };
      },
    }).then(
      (id) => {
        visitor?.authenticated();
        const waiting = id.resumed ? this.resumable(id.name, id.session) : undefined;
        if (waiting) {
          waiting.session.resume(link, id.peerNextSeq);
          this.log(`worker '${id.name}' resumed its session from ${peer}`);
          this.emit('agentResumed', waiting);
          return;
        }
        const options = sessionOptions(id.params);
        const resumable = options.resumable;
        const session = new Session(link, options);
        const agent = new AgentConnection(id.name, session, id.params.window, (this.options.grace ?? DEFAULT_GRACE_SECONDS) * 1000, this.log);
        session.on('forged', (count: number) => {
          if (count === 1) this.log(`worker '${id.name}': a frame failed authentication (forged, replayed or reflected on the way): dropped`);
        });
        if (resumable) {
          const key = id.session.toString('hex');
          this.sessions.set(key, agent);
          void agent.closed.then(() => this.sessions.delete(key));
        }
        this.admit(agent, peer);
      },
      (failure: Error) => {
        // The front door logged its drops already (rate-limited too).
        const error = visitor?.dropped ?? failure;
        if (!visitor?.dropped) {
          const elsewhere = claimed !== undefined && !allowed(claimed) ? ` (${peer} is for worker '${options.worker}')` : '';
          this.rejections.note('connections rejected', `rejected connection from ${peer}: ${error.message}${elsewhere}`);
        }
        const who: RejectedWorker = {
          worker: claimed,
          known: claimed !== undefined && allowed(claimed) && Object.prototype.hasOwnProperty.call(this.workers, claimed),
        };
        this.emit('rejected', peer, error, who);
      },
    );
  }

  /** The agent connection whose session `id`, of worker `name`, can be resumed. */
  private resumable(name: string, id: Buffer): AgentConnection | undefined {
    const agent = this.sessions.get(id.toString('hex'));
    return agent && agent.name === name && !agent.session.isClosed ? agent : undefined;
  }

  /**
   * Waits for the agent's INFO before offering it. A worker has one connection
   * waiting at a time: each holds a session's buffers, and a peer with the
   * secret must not multiply them by opening connections it never completes
   * (the newest wins, as a reconnecting agent's does).
   */
  private admit(agent: AgentConnection, peer: string): void {
    const earlier = this.admitting.get(agent.name);
    earlier?.close(new TetherError('DUPLICATE_WORKER', `worker '${agent.name}' authenticated again on another connection before sending its info here`));
    this.admitting.set(agent.name, agent);
    const admitted = () => {
      if (this.admitting.get(agent.name) === agent) this.admitting.delete(agent.name);
    };
    let informed = false;
    const timer = setTimeout(
      () => agent.close(new TetherError('HANDSHAKE_TIMEOUT', 'no worker info within 10 s of authentication')),
      INFO_TIMEOUT_MS,
    );
    agent.once('info', () => {
      clearTimeout(timer);
      informed = true;
      admitted();
      const previous = this.agents.get(agent.name);
      if (previous) {
        this.log(`worker '${agent.name}' started a new session from ${peer}; closing its previous one`);
        previous.close(new TetherError('DUPLICATE_WORKER', `worker '${agent.name}' restarted or connected again: commands of its previous session are lost`));
      }
      this.agents.set(agent.name, agent);
      this.log(`worker '${agent.name}' connected from ${peer}`);
      this.emit('agent', agent);
    });
    void agent.closed.then(() => {
      clearTimeout(timer);
      // Why, too: forged frames close the link without an ERROR, so this line is their only trace.
      const why = agent.closeReason ? describeError(agent.closeReason) : 'closed';
      if (this.agents.get(agent.name) === agent) {
        this.agents.delete(agent.name);
        this.log(`worker '${agent.name}' disconnected (${why})`);
        this.emit('agentClosed', agent);
      } else if (!informed) {
        admitted();
        // A peer with the secret can cause these at will: rate-limited.
        this.rejections.note('connections closed before their worker info', `worker '${agent.name}' from ${peer} closed before it sent its info (${why})`);
      }
    });
  }

  /** Ends every session with SHUTDOWN (so agents do not try to resume), then stops listening. */
  async close(): Promise<void> {
    const all = new Set([...this.agents.values(), ...this.sessions.values()]);
    for (const agent of all) agent.close(new TetherError('SHUTDOWN', 'the master is shutting down'));
    for (const link of this.links) link.close();
    await Promise.all([...all].map((a) => a.closed));
    await Promise.all(this.servers.splice(0).map((l) => l.close()));
    this.frontDoor.close();
    this.rejections.flush();
  }
}

