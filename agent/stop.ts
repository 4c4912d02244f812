/**
 * How the agent stops its commands when it stops (SIGTERM or SIGINT,
 * agent/cli.ts; the master's SHUTDOWN), in bounded time, as a service
 * manager expects (tether-agent.service: TimeoutStopSec=30; systemd's
 * default is 90 s):
 *
 *  1. Every running command is interrupted as the master's INTERRUPT
 *     interrupts it: its interruptSignal, TERM first when sigtermTime is set
 *     (runprocess.ts). The agent starts no new one (agent.ts).
 *  2. Once they have all ended, and KILL_AFTER_MS after the interrupt at the
 *     latest (at once when `hurry` aborts: a second signal), each process
 *     group they started that still has a running process gets SIGKILL,
 *     whatever their sigtermTime: a process that ignores its signal, or one
 *     left in the group by a command that ended, does not outlive the agent.
 *     KILL_AFTER_MS is Buildbot's wait for a killed process (runprocess.ts
 *     BACKUP_TIMEOUT).
 *  3. For REPORT_MS at most, the commands report how they ended (COMPLETE,
 *     after rc and "process killed by signal 9" for a KILLed one) and, while
 *     the link is up, the master acknowledges all of it. The caller then
 *     closes the session (ERROR SHUTDOWN).
 *
 * The process exits EXIT_MS after that at the latest (cli.ts), STOP_BOUND_MS
 * after the first signal in all. A process that survives SIGKILL
 * (uninterruptible sleep) is logged; while its group's leader runs, its
 * record (orphans.ts) stays for the next agent to kill.
 */
import * as os from 'node:os';
import type { Session } from '../wire/session';
import type { AgentCommand } from './agent-command';
import { groupsRunning, signalGroup } from './commands/process-group';

/** After the interrupt, what still runs of the commands gets SIGKILL this much later at the latest. */
export const KILL_AFTER_MS = 5000;
/** After the SIGKILL, how long the commands may take to report, and the master to acknowledge. */
export const REPORT_MS = 2000;
/** After the session closed, how long the socket may take to close before the process exits anyway (Link.close destroys it after 2 s). */
export const EXIT_MS = 3000;
/** From the first signal to the exit, at most: a third of the unit's TimeoutStopSec=30, a ninth of systemd's default. */
export const STOP_BOUND_MS = KILL_AFTER_MS + REPORT_MS + EXIT_MS;
/** The reason the commands see (io.signal), and the session's ERROR SHUTDOWN. */
export const STOP_REASON = 'the agent is stopping';

/** How often the report phase looks at the process groups and the session. */
const POLL_MS = 50;

/** Steps 1 to 3 above for `commands`, those running when the agent began to stop. Never rejects. */
export async function stopCommands(
  commands: readonly AgentCommand[],
  session: () => Session | null,
  hurry: AbortSignal,
  log: (line: string) => void,
): Promise<void> {
  for (const command of commands) command.interrupt(STOP_REASON);
  let ended = false;
  const allEnded = Promise.all(commands.map((c) => c.finished)).then(() => void (ended = true));
  await first(allEnded, KILL_AFTER_MS, hurry);

  /** The groups of the commands that still have a running process, with their command lines. */
  const running = () => {
    const started = new Map(commands.flatMap((c) => [...c.processGroupsStarted]));
    return groupsRunning([...started.keys()]).map((pgid) => [pgid, started.get(pgid)] as const);
  };
  const killed = new Set<number>();
  const killRunning = () => {
    for (const [pgid, line] of running()) {
      if (killed.has(pgid)) continue;
      killed.add(pgid);
      if (signalGroup(pgid, os.constants.signals.SIGKILL, true)) log(`SIGKILL to process group ${pgid} (${line}), which still ran after the interrupt`);
    }
  };
  killRunning();
  const deadline = Date.now() + REPORT_MS;
  while (!(ended && running().length === 0 && flushed(session())) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    // a command that was still opening its pipes at the interrupt starts its process after it
    killRunning();
  }
  for (const [pgid, line] of running()) {
    log(`process group ${pgid} (${line}) still runs after SIGKILL: left behind (the next agent on this basedir kills it if its leader still runs)`);
  }
}

/** Whether the master has everything the session sent, or cannot get it now (the link is down). */
function flushed(session: Session | null): boolean {
  return session === null || !session.isAttached || (session.queuedByteCount === 0 && session.unackedByteCount === 0);
}

/** Resolves when `promise` settles, after `ms`, or when `hurry` aborts: whichever comes first. */
function first(promise: Promise<unknown>, ms: number, hurry: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      hurry.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    hurry.addEventListener('abort', done);
    if (hurry.aborted) done();
    void promise.then(done, done);
  });
}
