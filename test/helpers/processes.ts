/** Processes the tests start: whether one is alive, and children run in the foreground and killed with the test process. */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { waitFor } from './support';

/** Whether a process is alive: a zombie counts as dead (nothing may reap orphans in a container). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The processes of group `pgid` still alive (zombies are not), from /proc: empty without /proc. */
export function groupMembers(pgid: number): number[] {
  let names: string[];
  try {
    names = fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  return names.map(Number).filter((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      // after the command name: state, ppid, pgrp
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return state !== 'Z' && Number(pgrp) === pgid;
    } catch {
      return false; // ended meanwhile
    }
  });
}

/** The pid a process wrote to `file` (`echo $$ > file`), once it has: within 10 s. */
export async function readPid(file: string): Promise<number> {
  await waitFor(`${file} to be written`, () => /^\d+\n$/.test(fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : ''),
    { timeoutMs: 10_000, intervalMs: 20 });
  return Number(fs.readFileSync(file, 'utf8'));
}

const children = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // never leave a child (a Buildbot master, an agent...) behind if the test process dies
    process.once('exit', () => {
      for (const c of children) {
        try { c.kill('SIGKILL'); } catch { /* gone */ }
      }
    });
  }
}

/** A child process we own, run in the foreground (twistd --nodaemon). */
export class ForegroundProcess {
  private proc?: ChildProcess;
  /** The child's own stdout+stderr (twistd writes its log to twistd.log). */
  output = '';
  private exitInfo?: { code: number | null; signal: NodeJS.Signals | null };
  private exited?: Promise<void>;

  spawnChild(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): void {
    if (this.proc && !this.exitInfo) throw new Error('already running');
    this.output = '';
    this.exitInfo = undefined;
    const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    const keep = (d: Buffer): void => {
      this.output += d.toString('utf8');
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve();
      });
      child.once('error', (err) => {
        this.output += `\nspawn error: ${err.message}\n`;
        this.exitInfo = { code: -1, signal: null };
        resolve();
      });
    });
    this.proc = child;
  }

  /** The OS pid of the foreground twistd process (undefined if not started). */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** True while the child process is alive. */
  get running(): boolean {
    return !!this.proc && !this.exitInfo;
  }

  /** SIGTERM, wait up to timeoutMs, then SIGKILL. Resolves once the process is gone. */
  async stopProcess(timeoutMs = 20_000): Promise<void> {
    const child = this.proc;
    if (!child || this.exitInfo) return;
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      this.exited!.then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); }),
    ]);
    clearTimeout(timer);
    if (!done) {
      child.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Resolves with how the child ended, once it has (at once if it was never started). */
  async ended(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    await this.exited;
    return this.exitInfo ?? { code: null, signal: null };
  }

  /** Why the child ended, if it did. */
  exitedEarly(): string | undefined {
    if (!this.exitInfo) return undefined;
    return `exited with code ${this.exitInfo.code} signal ${this.exitInfo.signal}\n${this.output}`;
  }
}
