/** tether-agent: the command line of the agent. */
// First: loading it takes TETHER_SECRET out of the environment before anything else runs.
import { SECRET_VARIABLE, environmentSecret, holdSecret, variablesHoldingSecret } from './environment';
// Second: before the rest of the agent grows the heap.
import './young-generation';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseCommandLine, positiveInt, printedInfo, logLine, runMain } from '../wire/cli-support';
import { readJsonFile } from '../wire/json-file';
import { printableStack } from '../wire/printable';
import { DEFAULT_MAX_FRAME, MAX_WINDOW, MIN_MAX_FRAME, MIN_WINDOW, SERIAL_MAX_FRAME } from '../wire/handshake';
import { UsageError, describeEndpoint, openEndpoint, parseEndpoint } from '../wire/transport';
import { Agent } from './agent';
import { EXIT_MS, KILL_AFTER_MS, STOP_BOUND_MS } from './stop';
import { commands } from './commands/registry';

export const HELP = `Usage: tether-agent --master URL --name NAME --basedir DIR [options]

Runs Buildbot build steps for a Tether master (tether-master).

  --master URL        the master: tcp://HOST:PORT, tls://HOST:PORT or a serial
                      line, serial:DEVICE?baud=N (e.g. serial:/dev/ttyS0?baud=115200)
  --name NAME         this worker's name, as configured on the master
  --secret S          the worker's shared secret (visible in ps; prefer --secret-file)
  --secret-file F     read the secret from file F (first line); without
                      either, the agent reads the systemd credential
                      $CREDENTIALS_DIRECTORY/secret (LoadCredential=secret:F),
                      else the environment variable TETHER_SECRET (last resort)
  --basedir DIR       directory the builds run in (created if missing)
  --admin TEXT        who administers this worker (shown in Buildbot)
  --host TEXT         a description of this host (shown in Buildbot)
  --ca FILE           tls: trust this CA bundle or pinned master certificate
  --spool-memory MIB  output held in memory while the link is down
                      (default 64); more spills to BASEDIR/.tether-spool
  --no-resume         do not resume sessions: a dropped link ends the commands
  --max-frame BYTES   largest frame to accept (default ${DEFAULT_MAX_FRAME}; ${SERIAL_MAX_FRAME} on serial lines)
  --window BYTES      largest flow-control window to take, per command stream
                      (${MIN_WINDOW} to ${MAX_WINDOW}; default: the master's choice)
  --config FILE       read options from FILE, a JSON object whose keys are the
                      long options above without the dashes, e.g.
                      {"master": "tcp://buildmaster:9991", "name": "board-01",
                       "secret-file": "/etc/tether-agent.secret",
                       "basedir": "/var/lib/tether-agent"}
                      options on the command line override the file; relative
                      paths in the file are relative to the file's directory
  --verbose           print stack traces with errors
  --version           print the version and exit
  -h, --help          print this help and exit
`;

export const OPTIONS = {
  master: { type: 'string' },
  name: { type: 'string' },
  secret: { type: 'string' },
  'secret-file': { type: 'string' },
  basedir: { type: 'string' },
  admin: { type: 'string' },
  host: { type: 'string' },
  ca: { type: 'string' },
  'max-frame': { type: 'string' },
  window: { type: 'string' },
  'spool-memory': { type: 'string' },
  'no-resume': { type: 'boolean' },
  config: { type: 'string' },
  verbose: { type: 'boolean' },
  version: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type OptionValues = {
  -readonly [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string;
};

/** Options that make no sense in a config file. */
const NOT_IN_CONFIG = new Set(['config', 'version', 'help']);
/** Options holding a path: relative ones in a config file are relative to the file's directory. */
const PATH_OPTIONS = new Set(['secret-file', 'basedir', 'ca']);

/**
 * Reads a --config file: a JSON object with the long options as keys. A
 * string or a number for options with a value, true/false for the others
 * (verbose, ...); any other key is an error naming it.
 */
export function readConfigFile(file: string): OptionValues {
  const data = readJsonFile(file, `the config file ${file}`);
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new UsageError(`the config file ${file} must hold a JSON object of options`);
  }
  const values: Record<string, string | boolean> = {};
  const dir = path.dirname(path.resolve(file));
  for (const [key, value] of Object.entries(data)) {
    const spec = Object.prototype.hasOwnProperty.call(OPTIONS, key) ? OPTIONS[key as keyof typeof OPTIONS] : undefined;
    if (!spec || NOT_IN_CONFIG.has(key)) {
      throw new UsageError(`the config file ${file} has an unknown key "${key}" (keys are long options: ${
        Object.keys(OPTIONS).filter((k) => !NOT_IN_CONFIG.has(k)).join(', ')})`);
    }
    if (spec.type === 'boolean') {
      if (typeof value !== 'boolean') throw new UsageError(`the config file ${file}: "${key}" must be true or false`);
      values[key] = value;
    } else if (typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value))) {
      const text = String(value);
      values[key] = PATH_OPTIONS.has(key) && text !== '' ? path.resolve(dir, text) : text;
    } else {
      throw new UsageError(`the config file ${file}: "${key}" must be a string or a number`);
    }
  }
  return values as OptionValues;
}

/** The config file's options with the command line's on top; a secret given either way replaces the other. */
export function mergeOptions(fromFile: OptionValues, fromCommandLine: OptionValues): OptionValues {
  const merged: OptionValues = { ...fromFile };
  if (fromCommandLine.secret !== undefined || fromCommandLine['secret-file'] !== undefined) {
    delete merged.secret;
    delete merged['secret-file'];
  }
  for (const [key, value] of Object.entries(fromCommandLine)) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  return merged;
}

/** The systemd credential the agent reads when given no secret option (the unit's LoadCredential=secret:FILE). */
const CREDENTIAL = 'secret';

/**
 * The worker's secret, from the first of: --secret or --secret-file; the
 * systemd credential $CREDENTIALS_DIRECTORY/secret; TETHER_SECRET (the last
 * resort, already out of the environment). From then on the agent holds it:
 * no environment it hands on contains it.
 */
function readSecret(values: { secret?: string; 'secret-file'?: string }): string {
  if (values.secret !== undefined && values['secret-file'] !== undefined) {
    throw new UsageError('give --secret or --secret-file, not both');
  }
  const secret = values['secret-file'] !== undefined
    ? readSecretFile(values['secret-file'])
    : values.secret ?? systemdCredential() ?? environmentSecret();
  if (!secret) {
    throw new UsageError(`no secret: give --secret-file F, --secret S, LoadCredential=${CREDENTIAL}:F under systemd, or set ${SECRET_VARIABLE}`);
  }
  holdSecret(secret);
  return secret;
}

function systemdCredential(): string | undefined {
  const dir = process.env.CREDENTIALS_DIRECTORY;
  if (!dir || !existsSync(path.join(dir, CREDENTIAL))) return undefined;
  return readSecretFile(path.join(dir, CREDENTIAL));
}

/** The first line of `file`. */
function readSecretFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read the secret file: ${(error as Error).message}`);
  }
  const secret = text.split(/\r?\n/)[0];
  if (!secret) throw new UsageError(`the secret file ${file} is empty`);
  return secret;
}

export async function main(argv: string[]): Promise<number> {
  const { values: commandLine } = parseCommandLine(argv, OPTIONS);
  if (printedInfo('tether-agent', HELP, commandLine)) return 0;
  if (commandLine.config === undefined) return runAgent(commandLine);
  const values = mergeOptions(readConfigFile(commandLine.config), commandLine);
  if (!values.verbose || commandLine.verbose) return runAgent(values);
  // runMain sees only the command line's --verbose: the file's prints the stack here
  return runAgent(values).catch((error: Error) => {
    process.stderr.write(`${printableStack(error)}\n`);
    throw error;
  });
}

/** Runs the agent with its options (the command line's, or a config file's merged with them). */
async function runAgent(values: OptionValues): Promise<number> {
  for (const required of ['master', 'name', 'basedir'] as const) {
    if (!values[required]) throw new UsageError(`--${required} is required (see --help)`);
  }
  const endpoint = parseEndpoint(values.master!);
  const secret = readSecret(values);
  const maxFrame = positiveInt(values['max-frame'], '--max-frame', undefined, MIN_MAX_FRAME);
  const window = positiveInt(values.window, '--window', undefined, MIN_WINDOW, MAX_WINDOW);
  const spoolMiB = values['spool-memory'] === undefined ? undefined : Number(values['spool-memory']);
  if (spoolMiB !== undefined && (!Number.isInteger(spoolMiB) || spoolMiB < 1)) {
    throw new UsageError('--spool-memory must be a whole number of MiB, at least 1');
  }
  const basedir = path.resolve(values.basedir!);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(basedir, { recursive: true });
  const log = logLine('tether-agent');
  const holding = variablesHoldingSecret();
  if (holding.length) log(`not reported to the master nor passed to commands, as they hold the worker's secret: ${holding.join(', ')}`);
  const agent = new Agent({
    name: values.name!,
    secret,
    basedir,
    admin: values.admin,
    host: values.host,
    maxFrame,
    window,
    resume: !values['no-resume'],
    spoolMemory: spoolMiB === undefined ? undefined : spoolMiB * 1024 * 1024,
    commands,
    masterLabel: describeEndpoint(endpoint),
    open: () => openEndpoint(endpoint, { ca: values.ca }),
    log,
  });
  let signals = 0;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (signals++ === 0) {
        log(`${signal}: stopping within ${STOP_BOUND_MS / 1000} s: running commands are interrupted, ` +
          `and what still runs of them ${KILL_AFTER_MS / 1000} s later is killed`);
        agent.stop();
      } else {
        // still a stop, only without the wait: the default action would leave the commands running
        log(`${signal} again: killing what still runs of the commands now`);
        agent.stop(true);
      }
    });
  }
  await agent.run();
  // The session is closed: the process ends once its socket has (Link.close gives it 2 s). Whatever
  // holds it longer (a command's process that survived SIGKILL in uninterruptible sleep) must not.
  setTimeout(() => {
    log(`still running ${EXIT_MS / 1000} s after the session closed: exiting`);
    process.exit(0);
  }, EXIT_MS).unref();
  return 0;
}

if (require.main === module) runMain('tether-agent', () => main(process.argv.slice(2)), process.argv.includes('--verbose'));
