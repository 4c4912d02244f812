/** What every tether-master mode shares: the hub's options, the workers, and the hub built from them. */
import {
  DEFAULT_GRACE_SECONDS,
  DEFAULT_KEEPALIVE_SECONDS,
  DEFAULT_MAX_FRAME,
  DEFAULT_WINDOW,
  MAX_GRACE_SECONDS,
  MAX_KEEPALIVE_SECONDS,
  MAX_WINDOW,
  MIN_KEEPALIVE_SECONDS,
  MIN_MAX_FRAME,
  MIN_WINDOW,
} from '../wire/handshake';
import { positiveInt, splitOption } from '../wire/cli-support';
import { readJsonFile } from '../wire/json-file';
import { UsageError } from '../wire/transport';
import { COMPRESS_CHOICES, type CompressWhere, TetherHub } from './hub';

/** Options of the hub, in every mode (parseArgs form). */
export const HUB_OPTIONS = {
  listen: { type: 'string', multiple: true },
  worker: { type: 'string', multiple: true },
  'workers-file': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  keepalive: { type: 'string' },
  grace: { type: 'string' },
  'no-resume': { type: 'boolean' },
  'max-frame': { type: 'string' },
  window: { type: 'string' },
  compress: { type: 'string' },
  verbose: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export interface HubOptionValues {
  cert?: string;
  key?: string;
  keepalive?: string;
  grace?: string;
  'no-resume'?: boolean;
  'max-frame'?: string;
  window?: string;
  compress?: string;
}

function compressChoice(value: string | undefined): CompressWhere | undefined {
  if (value === undefined || (COMPRESS_CHOICES as readonly string[]).includes(value)) return value as CompressWhere | undefined;
  throw new UsageError(`--compress takes ${COMPRESS_CHOICES.join(', ')}, not '${value}'`);
}

/** Reads the workers JSON; `-` is standard input. */
export function readWorkersFile(file: string): Record<string, string> {
  const parsed = readJsonFile(file === '-' ? 0 : file, `the workers file ${file}`);
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
    const [name, secret] = splitOption(spec, '--worker', 'NAME:SECRET', ':');
    if (!secret) throw new UsageError(`--worker '${name}:' has an empty secret`);
    workers[name] = secret;
  }
  if (Object.keys(workers).length === 0) throw new UsageError('no workers: give --worker NAME:SECRET or --workers-file F');
  return workers;
}

/** The hub the options describe. */
export function hubFromOptions(values: HubOptionValues, workers: Record<string, string>, log?: (line: string) => void): TetherHub {
  return new TetherHub({
    workers,
    // The bounds agents hold the master to: outside them every agent would refuse the handshake.
    keepalive: positiveInt(values.keepalive, '--keepalive', DEFAULT_KEEPALIVE_SECONDS, MIN_KEEPALIVE_SECONDS, MAX_KEEPALIVE_SECONDS),
    grace: positiveInt(values.grace, '--grace', DEFAULT_GRACE_SECONDS, 1, MAX_GRACE_SECONDS),
    resume: !values['no-resume'],
    maxFrame: positiveInt(values['max-frame'], '--max-frame', DEFAULT_MAX_FRAME, MIN_MAX_FRAME),
    window: positiveInt(values.window, '--window', DEFAULT_WINDOW, MIN_WINDOW, MAX_WINDOW),
    compress: compressChoice(values.compress),
    cert: values.cert,
    key: values.key,
    log,
  });
}
