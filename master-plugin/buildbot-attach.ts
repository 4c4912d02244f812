/**
 * Keeps one Tether agent attached to Buildbot as a worker for as long as its
 * session lasts, the way buildbot-worker keeps itself attached. Each
 * connection is a BuildbotBridge; this file makes new ones.
 *
 * Contract:
 * - attachToBuildbot(agent, opts) connects at once. It never disconnects the
 *   agent, and its promise resolves once the agent's session has ended and
 *   the last bridge is closed.
 * - Whenever the Buildbot connection closes while the session lasts (Buildbot's
 *   worker.disconnect(), a restart of the master, the network, unanswered
 *   pings), a new bridge connects after a backoff delay, and presents the
 *   worker again. Commands that ran on the lost connection are interrupted by
 *   its bridge; Buildbot treats them as for a lost buildbot-worker.
 * - Every failed attempt (unreachable, timed out, refused) is retried the same
 *   way. A refusal too (HTTP 401: unknown name or wrong password; a duplicate
 *   connection for the worker), as buildbot-worker does: the agent's session is
 *   sound, and what Buildbot refuses now it takes after a reconfig, or once its
 *   previous connection for the worker is gone (an agent that starts a new
 *   session can race the old bridge's close). The agent is told, once per run of
 *   failures, so that its own log says why it gets no builds.
 * - Delays are those of Twisted's backoffPolicy(), which buildbot-worker uses:
 *   retry n (counted since the worker was last attached) waits
 *   min(1.5^n s, maxBackoffMs) plus up to 1 s of jitter: 1.5 s, 2.25 s, 3.4 s ... 60 s.
 * - When the agent's session ends, so does the attachment: its bridge
 *   disconnects from Buildbot and no retry follows.
 * - Logged: each loss and each failed attempt, with the retry number and its
 *   delay (the bridge logs why); each attachment, with the number of attempts
 *   it took.
 */
import { printable } from '../wire/printable';
import { BuildbotBridge } from './buildbot-bridge';
import type { RemoteAgent } from './remote';

/** buildbot-worker's (Twisted's backoffPolicy) longest wait, before jitter. */
export const DEFAULT_MAX_BACKOFF_MS = 60_000;
const INITIAL_DELAY_MS = 1000;
const FACTOR = 1.5;
const JITTER_MS = 1000;

export interface AttachOptions {
  /** ws://host:port (loopback only) or wss://host:port of Buildbot's msgpack_experimental_v7 port. */
  buildbotUrl: string;
  /** wss: the CA bundle or pinned certificate (PEM) to trust (default: Node's CAs). */
  buildbotCa?: Buffer;
  /** The worker's Buildbot password. */
  password: string;
  log: (line: string) => void;
  /** Longest wait between attempts, before jitter (default DEFAULT_MAX_BACKOFF_MS). */
  maxBackoffMs?: number;
}

/** The wait before retry `retry` (1, 2, ...): Twisted's backoffPolicy(); `random` in [0, 1) is the jitter. */
export function retryDelayMs(retry: number, maxBackoffMs = DEFAULT_MAX_BACKOFF_MS, random = Math.random): number {
  return Math.min(INITIAL_DELAY_MS * FACTOR ** Math.min(100, retry), maxBackoffMs) + random() * JITTER_MS;
}

/**
 * The agent as one bridge sees it, with a `closed` of its own: a bridge that
 * has ended is then not kept alive by the session's promise while attempts
 * repeat (one a minute for as long as Buildbot is away).
 */
function agentForBridge(agent: RemoteAgent, closed: Promise<void>): RemoteAgent {
  return {
    name: agent.name,
    get info() {
      return agent.info;
    },
    run: (command, args, sink) => agent.run(command, args, sink),
    print: (text) => agent.print(text),
    shutdown: () => agent.shutdown(),
    disconnect: (reason) => agent.disconnect(reason),
    closed,
  };
}

export async function attachToBuildbot(agent: RemoteAgent, opts: AttachOptions): Promise<void> {
  const { buildbotUrl, buildbotCa, password, log } = opts;
  const worker = `worker '${agent.name}'`;
  let sessionOver = false;
  let endBridge: (() => void) | null = null;
  let wake: (() => void) | null = null;
  const onSessionOver = (): void => {
    sessionOver = true;
    endBridge?.();
    wake?.();
  };
  agent.closed.then(onSessionOver, onSessionOver);

  /** Retries since the worker was last attached. */
  let retry = 0;
  let agentTold = false;
  while (!sessionOver) {
    const bridgeClosed = new Promise<void>((resolve) => (endBridge = resolve));
    const bridge = new BuildbotBridge(agentForBridge(agent, bridgeClosed), { buildbotUrl, buildbotCa, workerName: agent.name, password, log });
    let problem: string;
    try {
      await bridge.start();
      const after = retry ? ` again after ${retry} attempt${retry === 1 ? '' : 's'}` : '';
      log(`${worker} attached to Buildbot at ${buildbotUrl}${after}`);
      retry = 0;
      agentTold = false;
      await bridge.closed;
      problem = 'lost its Buildbot connection';
    } catch (error) {
      // close(), not `closed`: a bridge that failed before it had a connection has none to see closing
      await bridge.close();
      problem = 'is not attached to Buildbot';
      if (!sessionOver && !agentTold) {
        // the reason can hold Buildbot's close reason, text from a peer: escaped and bounded, an agent may log it as it comes
        agent.print(`not attached to Buildbot (${printable((error as Error).message)}); retrying with backoff`);
        agentTold = true;
      }
    }
    if (sessionOver) break;
    retry++;
    const delay = retryDelayMs(retry, opts.maxBackoffMs);
    // the bridge has logged why, as buildbot-worker logs the loss and then "Scheduling retry N ... in D seconds"
    log(`${worker} ${problem}; retry ${retry} in ${(delay / 1000).toFixed(1)} s`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delay);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    wake = null;
  }
}
