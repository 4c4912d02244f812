/**
 * The environment the agent hands on — INFO's environ for the master, and
 * every command's, which Buildbot logs in the step's header — without the
 * worker's secret.
 *
 * Loading this module takes TETHER_SECRET out of process.env, so that no
 * child inherits it: the entry points (agent/cli.ts, bin/tether-agent.js)
 * load it before anything else, and it imports nothing. Once the agent holds
 * its secret (holdSecret), withoutSecret() also leaves out any variable whose
 * value contains it, whatever its name and whoever set it.
 */

/** The variable the secret can be passed in, as a last resort. */
export const SECRET_VARIABLE = 'TETHER_SECRET';

const fromEnvironment = process.env[SECRET_VARIABLE] || undefined;
delete process.env[SECRET_VARIABLE];

/** TETHER_SECRET as the process was started with it (it is no longer in process.env). */
export function environmentSecret(): string | undefined {
  return fromEnvironment;
}

/** The secret of this agent process: one agent per process, so one place for it. */
let held: string | undefined;

/** Keeps `secret` out of every environment the agent hands on from now on. */
export function holdSecret(secret: string): void {
  held = secret || undefined;
}

/** `env` without the variables whose value contains the held secret (and without unset ones). */
export function withoutSecret(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && !(held !== undefined && value.includes(held))) out[name] = value;
  }
  return out;
}

/** Names of the agent's own variables that withoutSecret() leaves out (for one log line at start). */
export function variablesHoldingSecret(): string[] {
  const kept = withoutSecret(process.env);
  return Object.keys(process.env).filter((name) => !(name in kept));
}
