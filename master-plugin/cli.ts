/** tether-master: the command line of the master plugin. */
import { readFileSync } from 'node:fs';
import { parseCommandLine, printedInfo, logLine } from '../wire/cli-support';
import { DEFAULT_GRACE_SECONDS, DEFAULT_KEEPALIVE_SECONDS, DEFAULT_MAX_FRAME, DEFAULT_WINDOW } from '../wire/handshake';
import { UsageError } from '../wire/transport';
import { BuildbotBridge } from './buildbot-bridge';
import { SUBCOMMANDS, type Subcommand, subcommand } from './exec';
import { TetherHub } from './hub';
import { listenAll } from './listeners';
import type { RemoteAgent } from './remote';

export const HELP = `Usage: tether-master --listen URL (--worker NAME:SECRET | --workers-file F) [--buildbot ws://HOST:PORT] [options]
       tether-master exec|put|get --listen URL --worker NAME:SECRET ... (see tether-master exec --help)

Accepts Tether agents and presents each one to a Buildbot master as an
ordinary worker (over Buildbot's msgpack worker protocol). Without --buildbot
it only accepts agents (standalone mode).

  --listen URL          where agents connect: tcp://HOST:PORT or tls://HOST:PORT,
                        or a serial line for one worker,
                        serial:DEVICE?baud=N&worker=NAME (repeatable)
  --worker NAME:SECRET  a worker and its shared secret (repeatable; visible in
                        ps, prefer --workers-file)
  --workers-file F      JSON {"workers": [{"name": N, "secret": S}, ...]};
                        F = - reads it from standard input
  --buildbot URL        the Buildbot master's msgpack worker port, ws://HOST:PORT
                        (c['protocols'] = {'msgpack_experimental_v7': {'port': PORT}});
                        the worker's Buildbot password is its Tether secret
  --cert FILE           tls: PEM certificate for tls:// listeners
  --key FILE            tls: PEM private key for tls:// listeners
  --grace SECONDS       how long a dropped agent's session, running commands and
                        Buildbot connection are kept for it to reconnect
                        (default ${DEFAULT_GRACE_SECONDS})
  --no-resume           do not resume sessions: a dropped link ends the session
  --keepalive SECONDS   ping interval; a peer silent for 3 intervals is dead
                        (default ${DEFAULT_KEEPALIVE_SECONDS})
  --max-frame BYTES     largest frame to accept (default ${DEFAULT_MAX_FRAME})
  --window BYTES        flow-control window per command stream (default ${DEFAULT_WINDOW})
  --verbose             print stack traces with errors
  --version             print the version and exit
  -h, --help            print this help and exit

Without Buildbot:
  exec [options] -- CMD [ARGS...]   run a command on an agent, streaming its
                                    output, with its exit code
  put [options] LOCAL REMOTE        copy a file to an agent
  get [options] REMOTE LOCAL        copy a file from an agent
`;

export const OPTIONS = {
  listen: { type: 'string', multiple: true },
  worker: { type: 'string', multiple: true },
  'workers-file': { type: 'string' },
  buildbot: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  keepalive: { type: 'string' },
  grace: { type: 'string' },
  'no-resume': { type: 'boolean' },
  'max-frame': { type: 'string' },
  window: { type: 'string' },
  verbose: { type: 'boolean' },
  version: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function positiveInt(value: string | undefined, flag: string, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer of at least ${min}`);
  return n;
}

/** Reads the workers JSON; `-` is standard input. */
export function readWorkersFile(file: string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file === '-' ? 0 : file, 'utf8'));
  } catch (error) {
    throw new UsageError(`cannot read the workers file ${file}: ${(error as Error).message}`);
  }
  const list = (parsed as { workers?: unknown }).workers;
  if (!Array.isArray(list)) throw new UsageError(`the workers file ${file} has no "workers" list`);
  const workers: Record<string, string> = {};
  for (const entry of list) {
    const { name, secret } = (entry ?? {}) as { name?: unknown; secret?: unknown };
    if (typeof name !== 'string' || typeof secret !== 'string' || !name || !secret) {
      throw new UsageError(`every entry of the workers file needs a non-empty "name" and "secret"`);
    }
    workers[name] = secret;
  }
  return workers;
}

export function parseWorkers(values: { worker?: string[]; 'workers-file'?: string }): Record<string, string> {
  const workers = values['workers-file'] ? readWorkersFile(values['workers-file']) : {};
  for (const spec of values.worker ?? []) {
    const colon = spec.indexOf(':');
    if (colon <= 0 || colon === spec.length - 1) throw new UsageError(`--worker takes NAME:SECRET, not '${spec.replace(/:.*/, ':…')}'`);
    workers[spec.slice(0, colon)] = spec.slice(colon + 1);
  }
  if (Object.keys(workers).length === 0) throw new UsageError('no workers: give --worker NAME:SECRET or --workers-file F');
  return workers;
}

export async function main(argv: string[]): Promise<number> {
  const sub = argv[0] as Subcommand;
  if ((SUBCOMMANDS as readonly string[]).includes(sub)) return subcommand(sub, argv.slice(1));
  const { values } = parseCommandLine(argv, OPTIONS);
  if (printedInfo('tether-master', HELP, values)) return 0;
  if (!values.listen?.length) throw new UsageError('--listen is required (see --help)');
  if (values.buildbot && !/^wss?:\/\/[^/]+/.test(values.buildbot)) {
    throw new UsageError(`--buildbot takes ws://HOST:PORT, not '${values.buildbot}'`);
  }
  const workers = parseWorkers(values);
  const log = logLine('tether-master');
  const hub = new TetherHub({
    workers,
    keepalive: positiveInt(values.keepalive, '--keepalive', DEFAULT_KEEPALIVE_SECONDS),
    grace: positiveInt(values.grace, '--grace', DEFAULT_GRACE_SECONDS),
    resume: !values['no-resume'],
    maxFrame: positiveInt(values['max-frame'], '--max-frame', DEFAULT_MAX_FRAME, 256),
    window: positiveInt(values.window, '--window', DEFAULT_WINDOW, 1024),
    cert: values.cert,
    key: values.key,
    log,
  });
  if (values.buildbot) {
    const buildbotUrl = values.buildbot;
    hub.on('agent', (agent: RemoteAgent) => {
      const bridge = new BuildbotBridge(agent, { buildbotUrl, workerName: agent.name, password: workers[agent.name], log });
      bridge.start().then(
        () => log(`worker '${agent.name}' attached to Buildbot at ${buildbotUrl}`),
        (error: Error) => {
          log(`worker '${agent.name}': Buildbot refused the connection: ${error.message}`);
          agent.disconnect(`Buildbot refused worker '${agent.name}': ${error.message}`);
        },
      );
    });
  }
  await listenAll(hub, values.listen);
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        log(`${signal}: stopping`);
        resolve();
      });
    }
  });
  await hub.close();
  return 0;
}
