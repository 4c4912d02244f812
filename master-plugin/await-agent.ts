/**
 * awaitAgent: TetherHub.waitForAgent with the errors a person can act on. An
 * agent that connects under the awaited name but fails the handshake ends the
 * wait at once ("check the secret") instead of letting it run out.
 */
import { TetherError } from '../wire/errors';
import type { RejectedWorker, TetherHub } from './hub';
import type { RemoteAgent } from './remote';

export interface AwaitAgentOptions {
  timeoutMs: number;
  /** How agents reach this hub (e.g. 'tcp://buildhost:9991'), for the hint when none comes. */
  masterUrl?: string;
  /** The whole hint instead (e.g. for a serial line: which device the agent is on the other end of). */
  hint?: string;
}

export function awaitAgent(hub: TetherHub, name: string, opts: AwaitAgentOptions): Promise<RemoteAgent> {
  const present = hub.connected().find((a) => a.name === name);
  if (present) return Promise.resolve(present);
  return new Promise((resolve, reject) => {
    const strangers = new Set<string>();
    const done = () => {
      clearTimeout(timer);
      hub.off('agent', onAgent);
      hub.off('rejected', onRejected);
    };
    const onAgent = (agent: RemoteAgent) => {
      if (agent.name !== name) return;
      done();
      resolve(agent);
    };
    const onRejected = (peer: string, error: Error, who?: RejectedWorker) => {
      if (!who?.worker) return;
      if (who.worker !== name) {
        strangers.add(who.worker);
        return;
      }
      done();
      const code = error instanceof TetherError ? error.code : undefined;
      reject(
        code === 'AUTH_FAILED'
          ? new TetherError('AUTH_FAILED', `agent '${name}' (from ${peer}) failed authentication: check the secret`)
          : new TetherError(code ?? 'INTERNAL', `agent '${name}' (from ${peer}) was refused: ${error.message}`),
      );
    };
    const timer = setTimeout(() => {
      done();
      const seconds = Math.round(opts.timeoutMs / 1000);
      const hint = opts.hint
        ? `: ${opts.hint}`
        : opts.masterUrl
          ? `: is tether-agent running with --master ${opts.masterUrl} --name ${name}?`
          : '';
      const others = strangers.size
        ? ` (refused agents named ${[...strangers].map((s) => `'${s}'`).join(', ')}: not configured workers, or a wrong secret)`
        : '';
      reject(new TetherError('PEER_TIMEOUT', `agent '${name}' did not connect within ${seconds} s${hint}${others}`));
    }, opts.timeoutMs);
    hub.on('agent', onAgent);
    hub.on('rejected', onRejected);
  });
}
