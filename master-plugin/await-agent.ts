/**
 * awaitAgent: waits for an agent, with the errors a person can act on.
 * Only an authenticated agent ends the wait: anyone can connect and claim
 * the name, so a failed attempt under it is logged (rate-limited) and the
 * wait goes on. When it runs out, the error counts those attempts ("check
 * the secret") and names the other names that were refused.
 */
import { TetherError } from '../wire/errors';
import { longTimeout } from '../wire/long-timeout';
import { printable } from '../wire/printable';
import type { RejectedWorker, TetherHub } from './hub';
import { RateLimitedLog } from './rate-limited-log';
import type { RemoteAgent } from './remote';

export interface AwaitAgentOptions {
  timeoutMs: number;
  /** How agents reach this hub (e.g. 'tcp://buildhost:9991'), for the hint when none comes. */
  masterUrl?: string;
  /** The whole hint instead (e.g. for a serial line: which device the agent is on the other end of). */
  hint?: string;
  /** Where failed attempts under the awaited name are logged while the wait goes on. */
  log?: (line: string) => void;
}

/** Refused names kept for the final message: a peer may send any number of them. */
const MAX_STRANGERS = 5;

export function awaitAgent(hub: TetherHub, name: string, opts: AwaitAgentOptions): Promise<RemoteAgent> {
  const present = hub.connected().find((a) => a.name === name);
  if (present) return Promise.resolve(present);
  return new Promise((resolve, reject) => {
    const strangers = new Set<string>();
    let failedAuth = 0;
    let lastRefusal = '';
    const failures = new RateLimitedLog(opts.log ?? (() => undefined));
    const done = () => {
      timer.clear();
      hub.off('agent', onAgent);
      hub.off('rejected', onRejected);
      failures.flush();
    };
    const onAgent = (agent: RemoteAgent) => {
      if (agent.name !== name) return;
      done();
      resolve(agent);
    };
    const onRejected = (peer: string, error: Error, who?: RejectedWorker) => {
      if (!who?.worker) return;
      if (who.worker !== name) {
        if (strangers.size < MAX_STRANGERS) strangers.add(printable(who.worker));
        return;
      }
      if (error instanceof TetherError && error.code === 'AUTH_FAILED') {
        failedAuth++;
        failures.note(
          `failed attempts as '${name}'`,
          `an agent calling itself '${name}' (from ${peer}) failed authentication; still waiting for one that passes`,
        );
      } else {
        lastRefusal = ` ('${name}' from ${peer} was refused: ${printable(error.message)})`;
      }
    };
    // --wait has no bound, and a single Node timer set beyond 24.8 days fires at once.
    const timer = longTimeout(() => {
      done();
      const seconds = Math.round(opts.timeoutMs / 1000);
      const hint = opts.hint
        ? `: ${opts.hint}`
        : opts.masterUrl
          ? `: is tether-agent running with --master ${opts.masterUrl} --name ${name}?`
          : '';
      const failed = failedAuth
        ? ` (${failedAuth} attempt${failedAuth === 1 ? '' : 's'} as '${name}' failed authentication: check the secret)`
        : '';
      const others = strangers.size
        ? ` (refused agents named ${[...strangers].map((s) => `'${s}'`).join(', ')}: not configured workers, or a wrong secret)`
        : '';
      const why = `agent '${name}' did not connect within ${seconds} s${hint}${failed}${lastRefusal}${others}`;
      reject(new TetherError(failedAuth ? 'AUTH_FAILED' : 'PEER_TIMEOUT', why));
    }, opts.timeoutMs);
    hub.on('agent', onAgent);
    hub.on('rejected', onRejected);
  });
}
