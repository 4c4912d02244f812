/** tether-master and tether-agent run as real child processes, the way users run them. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BuildbotProcess } from './buildbot';
import { ForegroundProcess } from './processes';
import { REPO_ROOT, WaitAbort, makeTempDir, sleep, waitFor } from './support';

export const AGENT_BIN = path.join(REPO_ROOT, 'bin', 'tether-agent.js');
export const MASTER_BIN = path.join(REPO_ROOT, 'bin', 'tether-master.js');

export class TetherProcess implements BuildbotProcess {
  private readonly fg = new ForegroundProcess();

  constructor(
    readonly name: string,
    readonly dir: string,
    private readonly argv: string[],
    /** The program to run with `argv` (default: this Node; the single binary passes itself). */
    private readonly command: string = process.execPath,
    /** Variables added to this process's environment for it. */
    private readonly env: NodeJS.ProcessEnv = {},
    /** A line it prints once it is ready (a master: once it listens); start() waits for it. */
    private readonly ready?: RegExp,
  ) {}

  get pid(): number | undefined {
    return this.fg.pid;
  }

  get output(): string {
    return this.fg.output;
  }

  logTail(): string {
    return this.fg.output.slice(-20_000);
  }

  async start(): Promise<void> {
    this.fg.spawnChild(this.command, this.argv, { ...process.env, ...this.env }, this.dir);
    // A loaded machine can take longer than any fixed pause: an agent started before its
    // master listens has its first connection refused.
    if (this.ready) return this.waitForOutput(this.ready, 30_000);
    await sleep(100);
    const early = this.fg.exitedEarly();
    if (early) throw new Error(`${this.name} ${early}`);
  }

  /** Waits until the process printed a line matching `pattern`; fails at once if it exits without. */
  async waitForOutput(pattern: RegExp, timeoutMs = 20_000): Promise<void> {
    await waitFor(`${this.name} to print ${pattern}`, () => {
      if (pattern.test(this.fg.output)) return true;
      const early = this.fg.exitedEarly();
      if (early) throw new WaitAbort(`${this.name} ${early}`);
      return false;
    }, { timeoutMs, intervalMs: 20 });
  }

  stop(): Promise<void> {
    return this.fg.stopProcess(10_000);
  }

  /** Resolves with the exit code or signal, once the process has ended. */
  ended(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.fg.ended();
  }
}

/** A tether-master process bridging to Buildbot's msgpack port; secrets via a 0600 workers file. */
export async function tetherMaster(opts: { buildbotPort: number; listenPort: number; workers: Record<string, string>; extraArgs?: string[] }): Promise<TetherProcess> {
  const dir = await makeTempDir('tether-master-');
  const workersFile = path.join(dir, 'workers.json');
  const workers = Object.entries(opts.workers).map(([name, secret]) => ({ name, secret }));
  fs.writeFileSync(workersFile, JSON.stringify({ workers }), { mode: 0o600 });
  return new TetherProcess('tether-master', dir, [
    MASTER_BIN, '--buildbot', `ws://127.0.0.1:${opts.buildbotPort}`,
    '--listen', `tcp://127.0.0.1:${opts.listenPort}`, '--workers-file', workersFile, ...(opts.extraArgs ?? []),
  ], process.execPath, {}, / listening on tcp:\/\//);
}

/**
 * A tether-agent process; its basedir is `dir`/basedir, its secret in a file
 * (or, with secretInEnvironment, in TETHER_SECRET). `binary`: run this single
 * executable (npm run build:binary) instead of bin/tether-agent.js under this
 * Node. `env`: variables added to its environment.
 */
export async function tetherAgent(opts: {
  port: number; name: string; secret: string; binary?: string; secretInEnvironment?: boolean; env?: NodeJS.ProcessEnv;
}): Promise<TetherProcess & { basedir: string }> {
  const dir = await makeTempDir('tether-agent-');
  const basedir = path.join(dir, 'basedir');
  const args = ['--master', `tcp://127.0.0.1:${opts.port}`, '--name', opts.name, '--basedir', basedir];
  const env = { ...opts.env };
  if (opts.secretInEnvironment) {
    env.TETHER_SECRET = opts.secret;
  } else {
    const secretFile = path.join(dir, 'secret');
    fs.writeFileSync(secretFile, `${opts.secret}\n`, { mode: 0o600 });
    args.push('--secret-file', secretFile);
  }
  const proc = opts.binary
    ? new TetherProcess(`tether-agent ${opts.name} (${path.basename(opts.binary)})`, dir, args, opts.binary, env)
    : new TetherProcess(`tether-agent ${opts.name}`, dir, [AGENT_BIN, ...args], process.execPath, env);
  return Object.assign(proc, { basedir });
}
