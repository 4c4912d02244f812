/** tether-master and tether-agent as child processes on the two ends of a serial line. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AGENT_BIN, MASTER_BIN, TetherProcess } from './tether-procs';
import { makeTempDir } from './support';

/** tether-master bridging to Buildbot, listening on `device` for `worker`; secrets in a 0600 workers file. */
export async function serialTetherMaster(opts: {
  buildbotPort: number;
  device: string;
  worker: string;
  workers: Record<string, string>;
  baud?: number;
  extraArgs?: string[];
}): Promise<TetherProcess> {
  const dir = await makeTempDir('tether-master-');
  const workersFile = path.join(dir, 'workers.json');
  const workers = Object.entries(opts.workers).map(([name, secret]) => ({ name, secret }));
  fs.writeFileSync(workersFile, JSON.stringify({ workers }), { mode: 0o600 });
  const url = `serial:${opts.device}?baud=${opts.baud ?? 115200}&worker=${encodeURIComponent(opts.worker)}`;
  return new TetherProcess('tether-master', dir, [
    MASTER_BIN, '--buildbot', `ws://127.0.0.1:${opts.buildbotPort}`, '--listen', url, '--workers-file', workersFile,
    ...(opts.extraArgs ?? []),
  ]);
}

/** tether-agent on `device`; its basedir is `dir`/basedir, its secret in a file. */
export async function serialTetherAgent(opts: {
  device: string;
  name: string;
  secret: string;
  baud?: number;
}): Promise<TetherProcess & { basedir: string }> {
  const dir = await makeTempDir('tether-agent-');
  const secretFile = path.join(dir, 'secret');
  fs.writeFileSync(secretFile, `${opts.secret}\n`, { mode: 0o600 });
  const basedir = path.join(dir, 'basedir');
  const proc = new TetherProcess(`tether-agent ${opts.name}`, dir, [
    AGENT_BIN, '--master', `serial:${opts.device}?baud=${opts.baud ?? 115200}`, '--name', opts.name,
    '--secret-file', secretFile, '--basedir', basedir,
  ]);
  return Object.assign(proc, { basedir });
}
