/**
 * 'rmdir': buildbot_worker/commands/fs.py RemoveDirectory (POSIX branch).
 *
 * Arguments: paths (list; or Buildbot's dir, a string or list, relative to
 * io.basedir), timeout (default 120), maxTime, logEnviron (default True).
 *
 * For each path in turn: `rm -rf <path>` through RunProcess in io.basedir
 * (so the usual runprocess headers, stdout/stderr and "elapsedTime=" are
 * sent, but no per-process rc); if that fails, `chmod -Rf u+rwx <path>` and
 * `rm -rf` once more (a leftover chmod 000 subdirectory). A failing path
 * makes the final rc non-zero (the last failing rc) but the other paths are
 * still removed; then one ('rc', rc). A path that does not exist is rc 0
 * (rm -f). An empty list fails the command (Python's assert).
 *
 * As in buildbot-worker, an interrupt does not stop the rm (Command.interrupt
 * is a no-op for it); it only silences the final rc and 'elapsed'.
 */
import type { CommandIO } from './command';
import { CommandFailure } from './command';
import { argOr, defineCommand, optNumber, truthy } from './base';
import { RunProcess } from './runprocess';

interface RmdirSetup {
  paths: string[];
  timeout: number | null;
  maxTime: number | null;
  logEnviron: boolean;
}

/** Runs one helper program the way fs.py does (sendRC=0, no PTY). */
export function runHelper(
  io: CommandIO,
  command: string[],
  opts: { timeout: number | null; maxTime: number | null; logEnviron: boolean },
): Promise<number> {
  const c = new RunProcess(io, io.basedir, {
    command,
    sendRC: false,
    timeout: opts.timeout,
    maxTime: opts.maxTime,
    logEnviron: opts.logEnviron,
    usePTY: false,
  });
  return c.start();
}

export const rmdir = defineCommand<RmdirSetup>({
  name: 'rmdir',
  className: 'RemoveDirectory',
  requiredArgs: ['paths'],
  setup: (args) => ({
    paths: args.paths as string[],
    timeout: optNumber(args, 'timeout', 120),
    maxTime: optNumber(args, 'maxTime'),
    logEnviron: truthy(argOr(args, 'logEnviron', true)),
  }),
  async start({ paths, ...opts }, io, ctx) {
    if (!paths.length) throw new CommandFailure('AssertionError');
    let rc = 0;
    for (const path of paths) {
      let res = await runHelper(io, ['rm', '-rf', path], opts);
      if (res !== 0) {
        // the rm -rf may fail on a left-over subdir with chmod 000 permissions
        await runHelper(io, ['chmod', '-Rf', 'u+rwx', path], opts);
        res = await runHelper(io, ['rm', '-rf', path], opts);
      }
      // a failure of one path fails the command, but the others are still removed
      if (res !== 0) rc = res;
    }
    ctx.sendStatus('rc', rc);
  },
});
