/**
 * Build processes that outlive a killed agent.
 *
 * Each command runs in its own process group (runprocess.ts). An agent that
 * stops normally, or whose session expires, kills those groups itself; one
 * that is SIGKILLed (OOM killer, crash, kill -9) cannot, and what it started
 * keeps holding files, ports, serial devices and CPU. So while a command runs
 * a record of its group lies in BASEDIR/.tether-run/<pgid>, and the next
 * agent on that basedir kills the groups still running before it connects.
 *
 * A record (JSON, mode 0600):
 *   pid             the group's leader; its pid is the pgid (the child is spawned detached: setsid())
 *   startTime       the leader's start, /proc/PID/stat field 22 (clock ticks since boot)
 *   bootId          /proc/sys/kernel/random/boot_id when it was written
 *   agentPid, agentStartTime   the agent that ran it
 *   command         the command as its header shows it (obfuscated words hidden), for the log
 * pid + startTime + bootId name one process: a later process that got the
 * same pid starts at another time, and after a reboot nothing is left to kill.
 *
 * Only a group whose leader still runs is killed: once the leader has gone,
 * a group of that number can no longer be told from a later one.
 *
 * Linux only: without /proc nothing is recorded or killed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { statFields } from './commands/process-group';

export const RUN_RECORD_DIR = '.tether-run';

interface GroupRecord {
  pid: number;
  startTime: string;
  bootId: string;
  agentPid: number;
  agentStartTime: string;
  command: string;
}

export class ProcessGroupRecords {
  readonly dir: string;
  private readonly basedir: string;
  /** This agent as records name it; null without /proc. */
  private readonly self = identify(process.pid);

  constructor(basedir: string, private readonly log: (line: string) => void) {
    this.basedir = path.resolve(basedir);
    this.dir = path.join(this.basedir, RUN_RECORD_DIR);
  }

  /**
   * Records a group leader that was just spawned (before anything could reap
   * it, so its /proc entry is there). Returns what removes the record, to be
   * called once the leader has exited. A failure is logged and the command
   * runs all the same, only unprotected against a killed agent.
   */
  record(pid: number, command: string): () => void {
    const leader = identify(pid);
    const agent = this.self;
    if (!leader || !agent) return () => undefined; // no /proc
    const record: GroupRecord = {
      pid,
      startTime: leader.startTime,
      bootId: leader.bootId,
      agentPid: process.pid,
      agentStartTime: agent.startTime,
      command: shortCommand(command),
    };
    const file = path.join(this.dir, String(pid));
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      fs.writeFileSync(file, JSON.stringify(record) + '\n', { mode: 0o600 });
    } catch (error) {
      this.log(`cannot record process group ${pid} in ${this.dir} (${(error as Error).message}): ` +
        'if this agent is killed, the next one will not stop it');
      return () => undefined;
    }
    return () => {
      try {
        fs.rmSync(file, { force: true });
      } catch (error) {
        // left behind, the record is harmless: the next agent finds its process gone
        this.log(`cannot remove ${file}: ${(error as Error).message}`);
      }
      removeIfEmpty(this.dir);
    };
  }

  /**
   * Kills the process groups that an agent killed earlier left running, and
   * removes every record that names no running process. Synchronous and
   * without waiting: it runs before the agent connects.
   */
  killOrphans(): void {
    const bootId = currentBootId();
    if (bootId === null) return; // no /proc: nothing was recorded
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.log(`cannot look for orphaned process groups in ${this.dir}: ${(error as Error).message}`);
      }
      return;
    }
    for (const name of names) {
      const file = path.join(this.dir, name);
      const record = readRecord(file);
      if (record && String(record.pid) === name && record.bootId === bootId) {
        if (!this.killIfOrphaned(record)) continue; // still owned: keep the record
      }
      try {
        fs.rmSync(file, { force: true });
      } catch (error) {
        this.log(`cannot remove ${file}: ${(error as Error).message}`);
      }
    }
    removeIfEmpty(this.dir);
  }

  /** Kills the record's group if its leader still runs; false when another live agent owns it. */
  private killIfOrphaned(record: GroupRecord): boolean {
    if (!isRunning(record.pid, record.startTime)) return true; // ended, or its pid went to another process
    if (isRunning(record.agentPid, record.agentStartTime)) {
      if (record.agentPid !== process.pid) {
        this.log(`process group ${record.pid} (${record.command}) belongs to agent pid ${record.agentPid}, ` +
          `which still runs on ${this.basedir}: left alone (two agents must not share a basedir)`);
      }
      return false;
    }
    try {
      // SIGKILL at once, as interrupts do by default: nobody is waiting for
      // these processes, and a grace period would hold up the start and widen
      // the window in which the pid could be reused.
      process.kill(-record.pid, 'SIGKILL');
      this.log(`killed orphaned process group ${record.pid} (${record.command}) left by an earlier agent (pid ${record.agentPid})`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') {
        this.log(`cannot kill orphaned process group ${record.pid} (${record.command}): ${(error as Error).message}`);
      }
    }
    return true;
  }
}

/** A command line as log lines and records show it: on one line, at most 200 characters. */
export function shortCommand(command: string): string {
  return command.replace(/\s+/g, ' ').trim().slice(0, 200);
}

let bootIdCache: string | null | undefined;

function currentBootId(): string | null {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
    } catch {
      bootIdCache = null;
    }
  }
  return bootIdCache;
}

/** starttime, field 22 of /proc/PID/stat; null when there is no such process (or no /proc). */
function startTimeOf(pid: number): string | null {
  return statFields(pid)?.[22 - 3] ?? null;
}

function identify(pid: number): { startTime: string; bootId: string } | null {
  const bootId = currentBootId();
  const startTime = startTimeOf(pid);
  return bootId !== null && startTime !== null ? { startTime, bootId } : null;
}

/** Whether `pid` is still the process that started at `startTime` (in this boot). */
function isRunning(pid: number, startTime: string): boolean {
  return startTimeOf(pid) === startTime;
}

/** A record as written by record(), or null for anything else (a pid of 0 or 1 would signal far too much). */
function readRecord(file: string): GroupRecord | null {
  let data: unknown;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
  const r = data as Partial<GroupRecord> | null;
  const ok = typeof r === 'object' && r !== null &&
    Number.isInteger(r.pid) && (r.pid as number) > 1 && Number.isInteger(r.agentPid) &&
    typeof r.startTime === 'string' && typeof r.bootId === 'string' &&
    typeof r.agentStartTime === 'string' && typeof r.command === 'string';
  return ok ? (r as GroupRecord) : null;
}

/** An idle basedir keeps nothing of ours (builds list it); a record written meanwhile keeps the directory. */
function removeIfEmpty(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty, or already gone
  }
}
