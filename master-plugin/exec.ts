/**
 * tether-master exec | put | get: a remote shell and file copies for one
 * agent, without Buildbot. Each run starts its own TetherHub on --listen,
 * waits for the agent, does one thing through the same RemoteAgent API the
 * Buildbot bridge uses, and exits.
 */
import * as os from 'node:os';
import { parseCommandLine, logLine, splitOption } from '../wire/cli-support';
import { printable, printableStack } from '../wire/printable';
import { UsageError } from '../wire/transport';
import { awaitAgent } from './await-agent';
import { DEFAULT_GRACE_SECONDS, DEFAULT_KEEPALIVE_SECONDS, DEFAULT_MAX_FRAME, DEFAULT_WINDOW, MAX_GRACE_SECONDS } from '../wire/handshake';
import type { TetherHub } from './hub';
import { HUB_OPTIONS, type HubOptionValues, hubFromOptions, parseWorkers } from './hub-options';
import { getFile, putFile } from './files';
import { agentFacingUrl, forWorker, listenAll } from './listeners';
import { progressBar } from './progress';
import type { RemoteAgent } from './remote';
import { BAD_RESULT, type RemoteShell, exitStatus, runShell } from './run-shell';

export const SUBCOMMANDS = ['exec', 'put', 'get'] as const;
export type Subcommand = (typeof SUBCOMMANDS)[number];

const COMMON_HELP = `  --listen URL          where the agent connects: tcp://HOST:PORT,
                        tls://HOST:PORT, or serial:DEVICE?baud=N (repeatable)
  --worker NAME:SECRET  the agent's name and shared secret (repeatable)
  --workers-file F      JSON {"workers": [{"name": N, "secret": S}, ...]}
  --agent NAME          which worker to use, when several are configured
  --wait SECONDS        how long to wait for the agent to connect (default 30)
  --cert FILE, --key FILE  PEM certificate and key for tls:// listeners
  --keepalive SECONDS   ping interval (default ${DEFAULT_KEEPALIVE_SECONDS})
  --grace SECONDS       how long a dropped agent may take to come back and
                        resume the command (default ${DEFAULT_GRACE_SECONDS}, at most ${MAX_GRACE_SECONDS})
  --no-resume           a dropped link ends the command
  --max-frame BYTES     largest frame to accept (default ${DEFAULT_MAX_FRAME})
  --window BYTES        flow-control window per stream (default ${DEFAULT_WINDOW})
  --compress WHERE      offer deflate on: serial (default), always, never
  --verbose             log connections and the agent's header lines on
                        stderr; stack traces with errors
  -h, --help            print this help and exit
`;

export const EXEC_HELP = `Usage: tether-master exec --listen URL --worker NAME:SECRET [options] -- CMD [ARGS...]

Waits for the agent, runs CMD on it (in its basedir, or --workdir), streams
its stdout and stderr here, forwards this standard input to it, and exits
with its exit code (128+N when a signal N killed it; 255 when tether itself
failed). One argument is a shell command line (run with /bin/sh -c);
several are the argv. Ctrl-C kills the remote process tree and exits 130.

  --workdir DIR         directory to run in, relative to the agent's basedir
                        (created if missing; default: the basedir)
  --env K=V             set a variable for the command (repeatable)
  --timeout SECONDS     kill the command after this long without output
  --max-time SECONDS    kill the command after this long in all
  --no-stdin            do not forward standard input (the command's is closed)
${COMMON_HELP}`;

export const PUT_HELP = `Usage: tether-master put --listen URL --worker NAME:SECRET [options] LOCAL REMOTE

Waits for the agent and copies the local file LOCAL to REMOTE on it (relative
to the agent's basedir; a REMOTE ending in / gets LOCAL's name). The remote
file gets LOCAL's permission bits. A progress bar is drawn when standard
error is a terminal.

${COMMON_HELP}`;

export const GET_HELP = `Usage: tether-master get --listen URL --worker NAME:SECRET [options] REMOTE LOCAL

Waits for the agent and copies REMOTE from it (relative to the agent's
basedir) to the local file LOCAL (or into LOCAL when it is a directory). A
progress bar is drawn when standard error is a terminal.

${COMMON_HELP}`;

const COMMON_OPTIONS = {
  ...HUB_OPTIONS,
  agent: { type: 'string' },
  wait: { type: 'string' },
} as const;

export const EXEC_OPTIONS = {
  ...COMMON_OPTIONS,
  workdir: { type: 'string' },
  env: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  'max-time': { type: 'string' },
  'no-stdin': { type: 'boolean' },
} as const;

export const FILE_OPTIONS = COMMON_OPTIONS;

type CommonValues = HubOptionValues & {
  listen?: string[];
  worker?: string[];
  'workers-file'?: string;
  agent?: string;
  wait?: string;
  verbose?: boolean;
};

/** Exit status when tether itself fails (as ssh does), so it stands apart from the command's codes. */
const EXEC_FAILED = 255;
const FILE_FAILED = 1;

function seconds(value: string | undefined, flag: string): number | null {
  if (value === undefined) return null;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} takes a number of seconds greater than 0, not '${value}'`);
  return n;
}

function parseEnv(specs: string[] | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const spec of specs ?? []) {
    const [name, value] = splitOption(spec, '--env', 'K=V', '=');
    env[name] = value;
  }
  return env;
}

function signalNumber(signal: NodeJS.Signals): number {
  return (os.constants.signals as Record<string, number>)[signal] ?? 1;
}

/** Resolves when the stream took the data (or failed: the caller learns that from 'error'). */
function writeOut(out: NodeJS.WriteStream, data: Buffer): Promise<void> | void {
  if (out.destroyed || out.writableEnded) return;
  if (out.write(data)) return;
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('error', done);
      out.off('close', done);
      resolve();
    };
    out.on('drain', done);
    out.on('error', done);
    out.on('close', done);
  });
}

interface Session {
  hub: TetherHub;
  agent: RemoteAgent;
}

/**
 * Starts a hub on --listen, waits for the chosen agent (giving up early when
 * `cancelled` settles: resolves null) and returns both.
 */
async function connectAgent(values: CommonValues, cancelled: Promise<unknown>): Promise<Session | null> {
  if (!values.listen?.length) throw new UsageError('--listen is required (see --help)');
  const workers = parseWorkers(values);
  let name = values.agent;
  if (name === undefined) {
    const names = Object.keys(workers);
    if (names.length > 1) throw new UsageError(`several workers are configured (${names.join(', ')}): choose one with --agent NAME`);
    name = names[0];
  } else if (!(name in workers)) {
    throw new UsageError(`--agent ${name}: no such worker (give --worker ${name}:SECRET)`);
  }
  const waitSeconds = seconds(values.wait, '--wait') ?? 30;
  const hub = hubFromOptions(values, workers, values.verbose ? logLine('tether-master') : undefined);
  try {
    const listening = await listenAll(hub, values.listen.map((url) => forWorker(url, name as string)));
    const net = listening.filter((l) => l.endpoint.kind !== 'serial');
    const lines = listening.filter((l) => l.endpoint.kind === 'serial').map(agentFacingUrl);
    const masterUrl = net.map(agentFacingUrl).join(' or ');
    const hint = [
      net.length ? `is tether-agent running with --master ${masterUrl} --name ${name}` : '',
      lines.length ? `is tether-agent --name ${name} running at the other end of ${lines.join(' or ')}` : '',
    ].filter(Boolean).join(', or ') + '?';
    let notice: NodeJS.Timeout | undefined;
    if (process.stderr.isTTY && !values.verbose) {
      notice = setTimeout(
        () => process.stderr.write(`tether-master: waiting for agent '${name}' on ${listening.map(agentFacingUrl).join(' and ')} (up to ${waitSeconds} s)\n`),
        1000,
      );
    }
    // With --verbose the hub logs every rejected connection itself.
    const log = values.verbose ? undefined : logLine('tether-master');
    const waiting = awaitAgent(hub, name, { timeoutMs: waitSeconds * 1000, hint, log });
    waiting.catch(() => undefined);
    const agent = await Promise.race([waiting, cancelled.then(() => null)]).finally(() => clearTimeout(notice));
    if (!agent) {
      await hub.close();
      return null;
    }
    return { hub, agent };
  } catch (error) {
    await hub.close();
    throw error;
  }
}

/** Runs a subcommand body: UsageErrors go to runMain (exit 2), other errors are one line here. */
async function guarded(verbose: boolean, failCode: number, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    if (error instanceof UsageError) throw error;
    const e = error as Error;
    process.stderr.write(`tether-master: ${printable(e.message)}\n`);
    if (verbose) process.stderr.write(`${printableStack(e)}\n`);
    return failCode;
  }
}

/** Catches SIGINT and SIGTERM while `body` runs; a second one leaves at once. */
function withSignals<T>(body: (caught: Promise<NodeJS.Signals>, first: () => NodeJS.Signals | null) => Promise<T>): Promise<T> {
  let first: NodeJS.Signals | null = null;
  let announce!: (s: NodeJS.Signals) => void;
  const caught = new Promise<NodeJS.Signals>((resolve) => (announce = resolve));
  const onSignal = (signal: NodeJS.Signals) => {
    if (first) process.exit(128 + signalNumber(first));
    first = signal;
    announce(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return body(caught, () => first).finally(() => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  });
}

/** Makes sure a forgotten handle cannot keep the process from exiting with its code. */
function exitSoon(code: number): number {
  setTimeout(() => process.exit(code), 3000).unref();
  return code;
}

async function execMain(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, EXEC_OPTIONS, true);
  if (values.help) {
    process.stdout.write(EXEC_HELP);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError('exec needs a command: tether-master exec [options] -- CMD [ARGS...]');
  const env = parseEnv(values.env);
  const timeout = seconds(values.timeout, '--timeout');
  const maxTime = seconds(values['max-time'], '--max-time');
  const verbose = Boolean(values.verbose);
  const forwardStdin = !values['no-stdin'] && values['workers-file'] !== '-';
  const command = positionals.length === 1 ? positionals[0] : positionals;

  const code = await withSignals((caught, first) =>
    guarded(verbose, EXEC_FAILED, async () => {
      const session = await connectAgent(values, caught);
      if (!session) return 128 + signalNumber(first() ?? 'SIGINT');
      const { hub, agent } = session;
      try {
        return await runRemote(agent, command, { env, timeout, maxTime, workdir: values.workdir, verbose, forwardStdin }, caught, first);
      } finally {
        await hub.close();
      }
    }),
  );
  return exitSoon(code);
}

interface RunOptions {
  env: Record<string, string>;
  timeout: number | null;
  maxTime: number | null;
  workdir?: string;
  verbose: boolean;
  forwardStdin: boolean;
}

async function runRemote(
  agent: RemoteAgent,
  command: string | string[],
  opts: RunOptions,
  caught: Promise<NodeJS.Signals>,
  first: () => NodeJS.Signals | null,
): Promise<number> {
  let brokenPipe = false;
  let shell: RemoteShell | undefined;
  const log = opts.verbose ? logLine('tether-master') : undefined;
  const onStdoutError = () => {
    // the reader went away (`| head`): stop the command, as SIGPIPE would
    if (!brokenPipe) shell?.interrupt('standard output was closed');
    brokenPipe = true;
  };
  process.stdout.on('error', onStdoutError);
  shell = runShell(agent, command, {
    workdir: opts.workdir ?? '.',
    env: opts.env,
    timeout: opts.timeout,
    maxTime: opts.maxTime,
    stdin: opts.forwardStdin,
    onOutput: ({ stream, data }) => writeOut(stream === 'stdout' ? process.stdout : process.stderr, data),
    onHeader: (text) => {
      if (log) {
        // The agent's text: each of its lines a log line of its own, marked as a header, so none can pass for ours.
        for (const line of text.split('\n')) if (line.trim()) log(`header: ${line}`);
      } else if (/^\s*command timed out/.test(text)) {
        process.stderr.write(`tether-master: ${printable(text.trim())}\n`);
      }
    },
  });
  const running = shell;

  let finished = false;
  if (opts.forwardStdin) void pumpStdin(running, () => finished);

  // A signal interrupts the remote command; its result still comes, but not forever.
  let giveUp!: () => void;
  const gaveUp = new Promise<null>((resolve) => (giveUp = () => resolve(null)));
  void caught.then((signal) => {
    if (opts.verbose) process.stderr.write(`tether-master: ${signal}: interrupting the remote command\n`);
    running.interrupt(`tether-master exec got ${signal}`);
    setTimeout(giveUp, 10_000).unref();
  });

  try {
    const result = await Promise.race([running.result, gaveUp]);
    const signal = first();
    if (signal) return 128 + signalNumber(signal);
    if (brokenPipe) return 128 + signalNumber('SIGPIPE');
    if (!result) return EXEC_FAILED;
    if (result.failure) {
      const what = result.failure.code === BAD_RESULT ? 'sent a bad result' : 'could not run the command';
      process.stderr.write(`tether-master: agent '${agent.name}' ${what}: ${printable(result.failure.message)}\n`);
      return EXEC_FAILED;
    }
    return exitStatus(result);
  } catch (error) {
    if (first()) return 128 + signalNumber(first() as NodeJS.Signals);
    throw new Error(`lost the connection to agent '${agent.name}': ${(error as Error).message}`);
  } finally {
    finished = true;
    process.stdout.off('error', onStdoutError);
    if (opts.forwardStdin) process.stdin.destroy();
  }
}

/** Local standard input → the remote command's, until EOF (then closes it) or the command ends. */
async function pumpStdin(shell: RemoteShell, finished: () => boolean): Promise<void> {
  try {
    for await (const chunk of process.stdin) {
      if (finished()) return;
      await shell.write(chunk as Buffer);
    }
    if (!finished()) await shell.end();
  } catch {
    // the command ended (its stream is gone) or stdin is unusable: nothing more to forward
  }
}

async function fileMain(which: 'put' | 'get', argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, FILE_OPTIONS, true);
  if (values.help) {
    process.stdout.write(which === 'put' ? PUT_HELP : GET_HELP);
    return 0;
  }
  if (positionals.length !== 2) {
    throw new UsageError(which === 'put' ? 'put takes LOCAL REMOTE (see put --help)' : 'get takes REMOTE LOCAL (see get --help)');
  }
  const verbose = Boolean(values.verbose);
  const [from, to] = positionals;
  const code = await withSignals((caught, first) =>
    guarded(verbose, FILE_FAILED, async () => {
      if (which === 'put') {
        // fail on a missing local file before waiting for the agent
        const fs = await import('node:fs');
        try {
          fs.accessSync(from, fs.constants.R_OK);
        } catch (error) {
          throw new Error(`cannot read ${from}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message}`);
        }
      }
      const session = await connectAgent(values, caught);
      if (!session) return 128 + signalNumber(first() ?? 'SIGINT');
      const { hub, agent } = session;
      const bar = process.stderr.isTTY ? progressBar(process.stderr, `${which} ${which === 'put' ? to : from}`) : null;
      try {
        const transfer =
          which === 'put'
            ? putFile(agent, from, to, { onProgress: bar ? (d, t) => bar.update(d, t) : undefined })
            : getFile(agent, from, to, { onProgress: bar ? (d, t) => bar.update(d, t) : undefined });
        const outcome = await Promise.race([transfer, caught.then(() => null)]);
        if (!outcome) return 128 + signalNumber(first() ?? 'SIGINT');
        bar?.finish();
        if (verbose) process.stderr.write(`tether-master: ${which}: ${outcome.bytes} bytes → ${outcome.path}\n`);
        return 0;
      } finally {
        await hub.close();
      }
    }),
  );
  return exitSoon(code);
}

/** Entry for `tether-master exec|put|get ...`. */
export function subcommand(which: Subcommand, argv: string[]): Promise<number> {
  return which === 'exec' ? execMain(argv) : fileMain(which, argv);
}
