/**
 * What buildbot_worker/commands/base.py's Command class does around every
 * command, so each command file only holds its own start():
 *
 *  - the argument translation of the protocol layer (paths.resolveArgs);
 *  - requiredArgs: a missing one fails the command with
 *    "<ClassName> is missing args: a, b" before it starts (no 'elapsed');
 *  - setup(args): Python's Command.setup, run from __init__ — an error there
 *    also fails the command before it starts (no 'elapsed');
 *  - doStart(): after start() settles, success or not, an 'elapsed' update
 *    (seconds, float) is sent through sendStatus;
 *  - sendStatus() drops updates once the command was interrupted, because
 *    doInterrupt() sets running = False (commands that must still report after
 *    an interrupt — RunProcess, the transfers — call io.update directly, as
 *    buildbot-worker calls protocol_command.send_update).
 *
 * Errors other than CommandFailure are turned into one, worded the way the
 * Python exception would print (e.g. "FileNotFoundError: [Errno 2] No such
 * file or directory: '/x'").
 */
import type { Args, Command, CommandIO } from './command';
import { CommandFailure } from './command';
import { toPyOSError } from './oserror';
import { resolveArgs } from './paths';
import { reprStr } from './pyrepr';

export interface CommandContext {
  /**
   * base.Command.sendStatus: a no-op once the command has been interrupted.
   * 'header' goes to io.header, anything else to io.update.
   */
  sendStatus(key: string, value: unknown): void;
  /** base.Command.interrupted as seen by sendStatus (io.signal aborted). */
  readonly interrupted: boolean;
}

export interface CommandDefinition<S> {
  /** Buildbot's command name, for the argument translation (paths.resolveArgs). */
  name: string;
  /** The buildbot-worker class name, for the "missing args" failure text. */
  className: string;
  requiredArgs: string[];
  setup(args: Args, io: CommandIO): S;
  start(state: S, io: CommandIO, ctx: CommandContext): Promise<void>;
}

export function defineCommand<S>(def: CommandDefinition<S>): Command {
  return async (rawArgs: Args, io: CommandIO): Promise<void> => {
    let state: S;
    try {
      const args = resolveArgs(def.name, rawArgs, io.basedir);
      const missing = def.requiredArgs.filter((a) => !(a in args));
      if (missing.length) {
        throw new CommandFailure(`${def.className} is missing args: ${missing.join(', ')}`);
      }
      state = def.setup(args, io);
    } catch (err) {
      throw asFailure(err);
    }

    const ctx: CommandContext = {
      sendStatus(key, value) {
        if (io.signal.aborted) return;
        try {
          if (key === 'header') io.header(String(value));
          else io.update(key, value);
        } catch {
          // like a failed send_update: logged and forgotten by buildbot-worker
        }
      },
      get interrupted() {
        return io.signal.aborted;
      },
    };
    const startTime = performance.now();
    try {
      await def.start(state, io, ctx);
    } catch (err) {
      throw asFailure(err);
    } finally {
      ctx.sendStatus('elapsed', (performance.now() - startTime) / 1000);
    }
  };
}

/** Python's str(OSError): "[Errno 2] No such file or directory: '/x'". */
export function osErrorText(err: unknown): string | null {
  const py = toPyOSError(err);
  if (!py) return null;
  const path = (err as NodeJS.ErrnoException).path;
  const suffix = typeof path === 'string' ? `: ${reprStr(path)}` : '';
  return `${py.className}: [Errno ${py.errno}] ${py.strerror}${suffix}`;
}

export function asFailure(err: unknown): CommandFailure {
  if (err instanceof CommandFailure) return err;
  const text = osErrorText(err);
  if (text) return new CommandFailure(text);
  if (err instanceof Error) return new CommandFailure(`${err.name}: ${err.message}`);
  return new CommandFailure(String(err));
}

/** Python truthiness of a wire value (want_stdout=0, keepstamp=None, ...). */
export function truthy(value: unknown): boolean {
  if (value === null || value === undefined || value === false || value === 0 || value === '') {
    return false;
  }
  if (Array.isArray(value)) return value.length > 0;
  if (value instanceof Uint8Array) return value.length > 0;
  if (typeof value === 'object') return Object.keys(value as object).length > 0;
  return true;
}

/** args.get(key, default): absent -> default (a present null stays null, as in Python). */
export function argOr<T>(args: Args, key: string, dflt: T): unknown {
  return key in args ? args[key] : dflt;
}

/** A number-or-None argument (timeout, maxTime, maxsize, ...). */
export function optNumber(args: Args, key: string, dflt: number | null = null): number | null {
  const v = argOr(args, key, dflt);
  if (v === null || v === undefined) return null;
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  throw new CommandFailure(`TypeError: ${reprStr(key)} must be a number, not ${typeof v}`);
}

/**
 * The fs commands' error report: header "<name>: <strerror>: <path>" (no
 * newline) and rc = errno, as in fs.py's `except OSError as e`. Anything
 * that is not an OSError is rethrown (it fails the command).
 */
export function sendOSError(ctx: CommandContext, name: string, err: unknown, path: string): void {
  const py = toPyOSError(err);
  if (!py) throw err;
  ctx.sendStatus('header', `${name}: ${py.strerror}: ${path}`);
  ctx.sendStatus('rc', py.errno);
}
