/**
 * The environment of a command's process (buildbot_worker/runprocess.py's
 * environ handling), built from the agent's own environment and the `env`
 * argument the master sent:
 *   - no env (or {}) means the agent's environment as it is;
 *   - a list value is joined with ':' (each item must be a string);
 *   - PYTHONPATH gets ":${PYTHONPATH}" appended, so that the agent's is kept;
 *   - ${VAR} in a value expands from the agent's environment (unset -> '');
 *   - a null value removes the variable;
 *   - PWD is the workdir's absolute path (not on msys, as runprocess);
 *   - any variable whose value holds the worker's secret is left out
 *     (../environment.ts), whichever side set it.
 * A value of the wrong type is a CommandFailure with Python's message.
 */
import * as path from 'path';
import { withoutSecret } from '../environment';
import { CommandFailure } from './command';
import { pyTypeName } from './pyrepr';

const ENV_SUBST = /\$\{([0-9a-zA-Z_]*)\}/g;

/** The environment for a process of a command run in `workdir`, as described above. */
export function processEnviron(environ: unknown, workdir: string): Record<string, string> {
  const env = withoutSecret(merge(environ, process.env as Record<string, string>));
  if (env.MACHTYPE !== 'i686-pc-msys') env.PWD = path.resolve(workdir);
  return env;
}

function merge(environ: unknown, base: Record<string, string>): Record<string, string> {
  if (!environ || typeof environ !== 'object' || Object.keys(environ).length === 0) return base;
  const env: Record<string, unknown> = { ...(environ as Record<string, unknown>) };
  for (const [key, v] of Object.entries(env)) {
    if (Array.isArray(v)) {
      v.forEach((item, i) => {
        if (typeof item !== 'string') {
          throw new CommandFailure(
            `TypeError: sequence item ${i}: expected str instance, ${pyTypeName(item)} found`,
          );
        }
      });
      env[key] = v.join(':');
    }
  }
  if ('PYTHONPATH' in env) {
    if (typeof env.PYTHONPATH !== 'string') {
      throw new CommandFailure(
        `TypeError: unsupported operand type(s) for +=: '${pyTypeName(env.PYTHONPATH)}' and 'str'`,
      );
    }
    env.PYTHONPATH += ':${PYTHONPATH}';
  }
  const subst = (s: string) => s.replace(ENV_SUBST, (_m, name: string) => base[name] ?? '');
  const out: Record<string, string> = {};
  for (const key of Object.keys(base)) {
    if (!(key in env) || (env[key] !== null && env[key] !== undefined)) out[key] = base[key];
  }
  for (const [key, v] of Object.entries(env)) {
    if (v === null || v === undefined) continue;
    if (typeof v !== 'string') {
      throw new CommandFailure(
        `RuntimeError: 'env' values must be strings or lists; key '${key}' is incorrect`,
      );
    }
    out[key] = subst(v);
  }
  return out;
}
