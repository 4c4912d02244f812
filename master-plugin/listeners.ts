/**
 * Opens --listen URLs on a hub (TetherHub.listen: tcp://, tls://, and serial
 * lines). A serial device that does not exist is a usage error named here,
 * before anything is opened.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { type Endpoint, describeEndpoint } from '../wire/transport';
import { UsageError } from '../wire/transport';
import type { TetherHub } from './hub';

/** The device of serial:/dev/ttyUSB0?baud=N..., serial:///dev/ttyUSB0, ...; null for other URLs. */
export function serialDevice(url: string): string | null {
  const m = /^serial:(?:\/\/(?=\/))?([^?#]*)/.exec(url);
  return m ? decodeURIComponent(m[1]) : null;
}

export interface Listening {
  url: string;
  /** The bound address (a port 0 resolved). */
  endpoint: Endpoint;
  description: string;
}

/** A serial URL bound to `worker` (worker= added when the URL names none); other URLs as they are. */
export function forWorker(url: string, worker: string): string {
  if (serialDevice(url) === null || /[?&]worker=/.test(url)) return url;
  return `${url}${url.includes('?') ? '&' : '?'}worker=${encodeURIComponent(worker)}`;
}

/** Opens every URL in turn; the first that fails throws (a UsageError for the user's mistakes). */
export async function listenAll(hub: TetherHub, urls: string[]): Promise<Listening[]> {
  const out: Listening[] = [];
  for (const url of urls) {
    const device = serialDevice(url);
    if (device && !fs.existsSync(device)) {
      throw new UsageError(`serial device ${device} does not exist: check the name (ls /dev/tty*) and that the adapter is plugged in`);
    }
    const endpoint = await hub.listen(url);
    out.push({ url, endpoint, description: describeEndpoint(endpoint) });
  }
  return out;
}

/**
 * What an agent gives as --master to reach a listener (this host's name for a
 * wildcard address). For a serial line, the master's end of it: the agent
 * names the device at its own end.
 */
export function agentFacingUrl(l: Listening): string {
  const e = l.endpoint;
  if (e.kind === 'serial') return describeEndpoint({ ...e, worker: undefined });
  const wildcard = e.host === '0.0.0.0' || e.host === '::';
  return describeEndpoint(wildcard ? { ...e, host: os.hostname() } : e);
}
