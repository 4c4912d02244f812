/** tether-master: the command line of the master plugin. */
import { readFileSync } from 'node:fs';
import { parseCommandLine, positiveInt, printedInfo, logLine } from '../wire/cli-support';
import { DEFAULT_GRACE_SECONDS, DEFAULT_KEEPALIVE_SECONDS, DEFAULT_MAX_FRAME, DEFAULT_WINDOW, MAX_GRACE_SECONDS } from '../wire/handshake';
import { HUB_OPTIONS, hubFromOptions, parseWorkers } from './hub-options';
import { UsageError } from '../wire/transport';
import { DEFAULT_MAX_BACKOFF_MS, attachToBuildbot } from './buildbot-attach';
import { buildbotUrl } from './buildbot-url';
import { SUBCOMMANDS, type Subcommand, subcommand } from './exec';
import { listenAll } from './listeners';
import type { RemoteAgent } from './remote';

export const HELP = `Usage: tether-master --listen URL (--worker NAME:SECRET | --workers-file F) [--buildbot URL] [options]
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
  --buildbot URL        the Buildbot master's msgpack worker port
                        (c['protocols'] = {'msgpack_experimental_v7': {'port': PORT}}):
                        ws://127.0.0.1:PORT on the Buildbot host, else
                        wss://HOST:PORT (TLS in front of that port: stunnel);
                        the worker's Buildbot password is its Tether secret,
                        so ws:// (in clear) is refused for any other host;
                        a worker Buildbot drops or refuses is presented again
                        with backoff while its agent stays connected
  --buildbot-ca FILE    wss: trust this CA bundle or pinned Buildbot certificate
                        (default: Node's built-in CA list)
  --buildbot-max-backoff SECONDS
                        longest wait between attempts to reach Buildbot, plus
                        up to 1 s of jitter (default ${DEFAULT_MAX_BACKOFF_MS / 1000}, as buildbot-worker)
  --cert FILE           tls: PEM certificate for tls:// listeners
  --key FILE            tls: PEM private key for tls:// listeners
  --grace SECONDS       how long a dropped agent's session, running commands and
                        Buildbot connection are kept for it to reconnect
                        (default ${DEFAULT_GRACE_SECONDS}, at most ${MAX_GRACE_SECONDS})
  --no-resume           do not resume sessions: a dropped link ends the session
  --keepalive SECONDS   ping interval; a peer silent for 3 intervals is dead
                        (default ${DEFAULT_KEEPALIVE_SECONDS})
  --max-frame BYTES     largest frame to accept (default ${DEFAULT_MAX_FRAME})
  --window BYTES        flow-control window per command stream (default ${DEFAULT_WINDOW})
  --compress WHERE      offer deflate on: serial (default; serial lines only),
                        always (TCP and TLS too, for agents behind a slow
                        network; costs the agent CPU), never
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
  ...HUB_OPTIONS,
  buildbot: { type: 'string' },
  'buildbot-ca': { type: 'string' },
  'buildbot-max-backoff': { type: 'string' },
  version: { type: 'boolean' },
} as const;

export async function main(argv: string[]): Promise<number> {
  const sub = argv[0] as Subcommand;
  if ((SUBCOMMANDS as readonly string[]).includes(sub)) return subcommand(sub, argv.slice(1));
  const { values } = parseCommandLine(argv, OPTIONS);
  if (printedInfo('tether-master', HELP, values)) return 0;
  if (!values.listen?.length) throw new UsageError('--listen is required (see --help)');
  const buildbot = values.buildbot === undefined ? undefined : buildbotUrl(values.buildbot);
  if (values['buildbot-ca'] !== undefined && buildbot?.protocol !== 'wss:') throw new UsageError('--buildbot-ca needs --buildbot wss://HOST:PORT');
  if (values['buildbot-max-backoff'] !== undefined && !values.buildbot) throw new UsageError('--buildbot-max-backoff needs --buildbot');
  const buildbotCa = values['buildbot-ca'] === undefined ? undefined : readCa(values['buildbot-ca']);
  const maxBackoffMs = positiveInt(values['buildbot-max-backoff'], '--buildbot-max-backoff', DEFAULT_MAX_BACKOFF_MS / 1000) * 1000;
  const workers = parseWorkers(values);
  const log = logLine('tether-master');
  const hub = hubFromOptions(values, workers, log);
  if (buildbot) {
    hub.on('agent', (agent: RemoteAgent) => {
      void attachToBuildbot(agent, { buildbotUrl: buildbot.href, buildbotCa, password: workers[agent.name], log, maxBackoffMs });
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

/** --buildbot-ca, read at start-up (as --cert and --key): a wrong path is a usage error, not a failure per attempt. */
function readCa(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new UsageError(`cannot read --buildbot-ca: ${(error as Error).message}`);
  }
}
