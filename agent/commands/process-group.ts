/**
 * The process group of a command's child, and how it is signalled and killed
 * (buildbot_worker/runprocess.py's sendSig, kill and checkProcess).
 *
 * The leader must be spawned detached: it then leads a process group of its
 * own whose pgid is its pid (Node calls setsid() where twisted calls
 * setpgid(0, 0)). Signals go to the whole group, falling back to the leader
 * alone; under script(1) (usePTY) the command runs in a session and group of
 * script's own on the pty, and that group is signalled first, while script is
 * still its parent, as twisted signals its PTY child's group.
 *
 * kill(): SIGTERM first when sigtermTime is set, then the final signal
 * sigtermTime seconds later if any process of the group is still alive;
 * without sigtermTime the final signal goes at once. Then `signalled` is
 * called. cancel() stops a kill() waiting between the two signals (the
 * process ended meanwhile). Closing pipes and giving up on a process that
 * will not die are the caller's (runprocess.ts).
 *
 * Differs from buildbot-worker 3.7: after sigtermTime, runprocess sends the
 * final signal to the leader only (its successful killpg(TERM) cleared the
 * pgid) and only if the leader is alive; here it goes to the whole group
 * whenever any member is alive.
 */
import type { ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import { type LongTimeout, longTimeout } from '../../wire/long-timeout';

export class ProcessGroup {
  private readonly pgid: number | null;
  private termTimer: LongTimeout | null = null;

  /** `leader` was spawned detached; `pty`: it is script(1) running the command on a pty. */
  constructor(
    private readonly leader: ChildProcess,
    private readonly pty: boolean,
  ) {
    this.pgid = leader.pid ?? null; // none when the spawn failed
  }

  /** Whether the leader, or any other process of its group, still runs. */
  alive(): boolean {
    return this.leaderAlive() || this.groupAlive();
  }

  /** Sends signal `name` ('TERM', 'KILL', ...) to the group, else to the leader alone. */
  signal(name: string): void {
    const signum = (os.constants.signals as Record<string, number>)['SIG' + name];
    if (signum !== undefined && this.pgid !== null && signalGroup(this.pgid, signum, this.pty)) return;
    if (!this.leaderAlive()) return;
    try {
      this.leader.kill((signum ?? name) as NodeJS.Signals | number);
    } catch {
      // unknown signal name
    }
  }

  /** Kills the group as described at the top; `signalled` runs once the final signal went out (or was not needed). */
  kill(finalSignal: string, sigtermTime: number | null, signalled: () => void): void {
    if (sigtermTime === null) {
      this.signal(finalSignal);
      signalled();
      return;
    }
    this.signal('TERM');
    this.termTimer = longTimeout(() => {
      this.termTimer = null;
      if (this.alive()) this.signal(finalSignal);
      signalled();
    }, sigtermTime * 1000);
  }

  /** Stops a kill() waiting for sigtermTime to pass. */
  cancel(): void {
    this.termTimer?.clear();
    this.termTimer = null;
  }

  private leaderAlive(): boolean {
    const c = this.leader;
    return c.pid !== undefined && c.exitCode === null && c.signalCode === null;
  }

  private groupAlive(): boolean {
    return this.pgid !== null && groupsRunning([this.pgid]).length > 0;
  }
}

/**
 * Sends `signum` to process group `pgid` and, with `childGroups`, first to
 * the groups that its leader's children lead (script(1)'s command on its
 * pty). False when there is no group `pgid` (any more).
 */
export function signalGroup(pgid: number, signum: number, childGroups: boolean): boolean {
  if (childGroups) {
    for (const pid of childrenOf(pgid)) {
      try {
        process.kill(-pid, signum);
      } catch {
        // not a group leader, or gone
      }
    }
  }
  try {
    process.kill(-pgid, signum);
    return true;
  } catch {
    return false; // no such process group (any more)
  }
}

/**
 * Those of `pgids` with a process that still runs. A zombie does not count:
 * it has ended and only waits for its parent (init, for an orphan) to reap it.
 * Read from /proc in one pass; without /proc, a group counts while it has
 * any member, zombies included.
 */
export function groupsRunning(pgids: readonly number[]): number[] {
  if (pgids.length === 0) return [];
  let names: string[];
  try {
    names = fs.readdirSync('/proc');
  } catch {
    return pgids.filter((pgid) => {
      try {
        process.kill(-pgid, 0);
        return true;
      } catch {
        return false;
      }
    });
  }
  const running = new Set<number>();
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const [state, , pgrp] = statFields(Number(name)) ?? []; // fields 3 to 5: state, ppid, pgrp
    if (state !== undefined && state !== 'Z') running.add(Number(pgrp));
  }
  return pgids.filter((pgid) => running.has(pgid));
}

/**
 * The fields of /proc/PID/stat from the third (state) on, so field N is at
 * index N - 3; null when there is no such process (or no /proc).
 */
export function statFields(pid: number): string[] | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // field 2, the command name in parentheses, may hold spaces and ')': the fields after the last ')' start at 3
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** The pids of a process's children, from /proc (empty where there is none). */
function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
