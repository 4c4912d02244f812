/**
 * 'shell': buildbot_worker/commands/shell.py WorkerShellCommand.
 *
 * Arguments (as Buildbot sends them): workdir and command (required; workdir
 * is relative to io.basedir), env, timeout, maxTime, sigtermTime,
 * want_stdout, want_stderr, initial_stdin, logfiles, usePTY, logEnviron,
 * interruptSignal. See runprocess.ts for what each does and what is sent.
 *
 * Tether extension: `stdin: true` feeds the bytes the master sends to the
 * command's stdin (io.readStdin(), after initial_stdin if both are given)
 * and closes it when the master ends it; without it stdin is closed at once,
 * as in buildbot-worker. (For `tether-master exec --stdin`.)
 *
 * An interrupt (io.signal) kills the process with interruptSignal (default
 * KILL; SIGTERM first if sigtermTime is set) and the command still reports rc
 * and elapsedTime, but not 'elapsed' (buildbot-worker's sendStatus is off
 * once interrupted).
 */
import type { Args } from './command';
import { argOr, defineCommand, optNumber, truthy } from './base';
import { RunProcess } from './runprocess';

interface ShellSetup {
  args: Args;
}

export const shell = defineCommand<ShellSetup>({
  name: 'shell',
  className: 'WorkerShellCommand',
  requiredArgs: ['workdir', 'command'],
  setup: (args) => ({ args }),
  async start({ args }, io) {
    const interruptSignal = args.interruptSignal;
    const c = new RunProcess(io, args.workdir as string, {
      command: args.command,
      environ: args.env,
      timeout: optNumber(args, 'timeout'),
      maxTime: optNumber(args, 'maxTime'),
      sigtermTime: optNumber(args, 'sigtermTime'),
      sendStdout: truthy(argOr(args, 'want_stdout', true)),
      sendStderr: truthy(argOr(args, 'want_stderr', true)),
      sendRC: true,
      initialStdin: args.initial_stdin,
      feedStdin: args.stdin === true,
      logfiles: argOr(args, 'logfiles', {}),
      usePTY: argOr(args, 'usePTY', false),
      logEnviron: truthy(argOr(args, 'logEnviron', true)),
      interruptSignal: truthy(interruptSignal) ? String(interruptSignal) : undefined,
    });
    const onAbort = () => c.kill('command interrupted');
    io.signal.addEventListener('abort', onAbort);
    try {
      const started = c.start();
      if (io.signal.aborted) onAbort();
      await started;
    } finally {
      io.signal.removeEventListener('abort', onAbort);
    }
  },
});
