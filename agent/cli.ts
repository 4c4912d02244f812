/** tether-agent: the command line of the agent. */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseCommandLine, printedInfo, logLine, runMain } from '../wire/cli-support';
import { DEFAULT_MAX_FRAME } from '../wire/handshake';
import { UsageError, connect, describeEndpoint, parseEndpoint } from '../wire/transport';
import { Agent } from './agent';
import { commands } from './commands/registry';

export const HELP = `Usage: tether-agent --master URL --name NAME --basedir DIR [options]

Runs Buildbot build steps for a Tether master (tether-master).

  --master URL        the master: tcp://HOST:PORT or tls://HOST:PORT
  --name NAME         this worker's name, as configured on the master
  --secret S          the worker's shared secret (visible in ps; prefer the next two)
  --secret-file F     read the secret from file F (first line)
                      (or set the environment variable TETHER_SECRET)
  --basedir DIR       directory the builds run in (created if missing)
  --admin TEXT        who administers this worker (shown in Buildbot)
  --host TEXT         a description of this host (shown in Buildbot)
  --ca FILE           tls: trust this CA bundle or pinned master certificate
  --max-frame BYTES   largest frame to accept (default ${DEFAULT_MAX_FRAME})
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
  verbose: { type: 'boolean' },
  version: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function readSecret(values: { secret?: string; 'secret-file'?: string }): string {
  if (values.secret !== undefined && values['secret-file'] !== undefined) {
    throw new UsageError('give --secret or --secret-file, not both');
  }
  if (values['secret-file'] !== undefined) {
    let text: string;
    try {
      text = readFileSync(values['secret-file'], 'utf8');
    } catch (error) {
      throw new UsageError(`cannot read the secret file: ${(error as Error).message}`);
    }
    const secret = text.split(/\r?\n/)[0];
    if (!secret) throw new UsageError(`the secret file ${values['secret-file']} is empty`);
    return secret;
  }
  const secret = values.secret ?? process.env.TETHER_SECRET;
  if (!secret) throw new UsageError('no secret: give --secret-file F, --secret S or set TETHER_SECRET');
  return secret;
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseCommandLine(argv, OPTIONS);
  if (printedInfo('tether-agent', HELP, values)) return 0;
  for (const required of ['master', 'name', 'basedir'] as const) {
    if (!values[required]) throw new UsageError(`--${required} is required (see --help)`);
  }
  const endpoint = parseEndpoint(values.master!);
  const secret = readSecret(values);
  const maxFrame = values['max-frame'] ? Number(values['max-frame']) : DEFAULT_MAX_FRAME;
  if (!Number.isInteger(maxFrame) || maxFrame < 256) throw new UsageError('--max-frame must be an integer of at least 256');
  const basedir = path.resolve(values.basedir!);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(basedir, { recursive: true });
  const log = logLine('tether-agent');
  const agent = new Agent({
    name: values.name!,
    secret,
    basedir,
    admin: values.admin,
    host: values.host,
    maxFrame,
    commands,
    masterLabel: describeEndpoint(endpoint),
    open: () => connect(endpoint, { ca: values.ca }),
    log,
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping`);
      agent.stop();
    });
  }
  await agent.run();
  return 0;
}

if (require.main === module) runMain('tether-agent', () => main(process.argv.slice(2)), process.argv.includes('--verbose'));
