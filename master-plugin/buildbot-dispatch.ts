/**
 * The master's requests to the worker, checked and answered as
 * buildbot_worker/msgpack.py answers them: keepalive, print, get_worker_info,
 * set_worker_settings, start_command, interrupt_command, shutdown. What a
 * request asks of the agent or of a command goes to the DispatchTarget; an
 * unknown op or a malformed request gets an error answer with
 * buildbot-worker's text.
 */
import { DEFAULT_MAX_LINE_LENGTH, pythonNewlineRe } from './buildbot-lines';
import { COMMAND_ALIASES, type Msg, PathMapper, WORKER_COMMAND_NAMES, buildWorkerInfo, reportedBasedir, systemOf } from './buildbot-protocol';
import type { RemoteAgent } from './remote';

/** Buildbot's set_worker_settings, as the bridge uses them. */
export interface WorkerSettings {
  newlineRe: RegExp;
  maxLineLength: number;
  /** buffer_size: the most update bytes (as buffer_manager counts them) in one 'update'. */
  bufferSize: number;
}

/** buildbot-worker's default buffer_size (base.py), also what 3.7 masters send. */
const DEFAULT_BUFFER_SIZE = 64 * 1024;
/** The largest buffer_size taken from a master (a buffer is held per command). */
const MAX_BUFFER_SIZE = 4 * 1024 * 1024;

/** A start_command, checked, with its paths relative to the agent's basedir. */
export interface StartRequest {
  /** command_id as a string: the key of the bridge's commands. */
  key: string;
  /** command_id as Buildbot sent it, for the messages about the command. */
  wireId: unknown;
  /** The agent's command name (old camelCase names mapped). */
  name: string;
  args: Record<string, unknown>;
  builder: string | null;
}

export interface DispatchTarget {
  readonly agent: RemoteAgent;
  log(line: string): void;
  /** Buildbot sent its settings: the worker is attached. */
  accept(): void;
  /** Runs the command; throws when it cannot start (the master gets the error). */
  start(request: StartRequest): void;
  /** Whether command_id `key` is running (a second start with the same id is refused). */
  isRunning(key: string): boolean;
  /** interrupt_command, for a command that may not (or no longer) run. */
  interrupt(key: string, why: string): void;
}

export class BuildbotDispatch {
  settings: WorkerSettings = {
    newlineRe: pythonNewlineRe(undefined),
    maxLineLength: DEFAULT_MAX_LINE_LENGTH,
    bufferSize: DEFAULT_BUFFER_SIZE,
  };
  private paths: PathMapper | null = null;

  constructor(private readonly target: DispatchTarget) {}

  /** Answers one request: its result, or a throw that becomes an error answer. */
  handle(op: string, msg: Msg): unknown {
    const { target } = this;
    switch (op) {
      case 'keepalive':
        return null;
      case 'print': {
        const text = typeof msg.message === 'string' ? msg.message : String(msg.message ?? '');
        target.log(`message from Buildbot: ${text}`);
        target.agent.print(text);
        return null;
      }
      case 'get_worker_info': {
        const info = buildWorkerInfo(target.agent.info);
        this.paths = new PathMapper(info.basedir as string, info.system as 'posix' | 'nt');
        return info;
      }
      case 'set_worker_settings':
        this.settings = settingsOf(msg.args);
        target.accept();
        return null;
      case 'start_command':
        target.start(this.startRequest(msg));
        return null;
      case 'interrupt_command':
        target.interrupt(String(msg.command_id), String(msg.why ?? 'interrupted by Buildbot'));
        return null;
      case 'shutdown':
        target.log('Buildbot asked the worker to shut down; telling the agent');
        target.agent.shutdown();
        return null;
      default:
        throw new Error(`Command ${op} does not exist.`);
    }
  }

  private startRequest(msg: Msg): StartRequest {
    for (const k of ['command_id', 'command_name', 'args']) {
      if (!(k in msg)) throw new Error(`message did not contain obligatory "${k}" key`);
    }
    const rawName = String(msg.command_name);
    const name = COMMAND_ALIASES[rawName] ?? rawName;
    if (!(WORKER_COMMAND_NAMES as readonly string[]).includes(name)) {
      throw new Error(`unrecognized WorkerCommand '${rawName}'`);
    }
    const rawArgs = msg.args;
    if (!rawArgs || typeof rawArgs !== 'object' || Array.isArray(rawArgs)) throw new Error('start_command args must be a map');
    const key = String(msg.command_id);
    if (this.target.isRunning(key)) throw new Error(`command_id ${key} is already running`);
    if (!this.paths) {
      this.paths = new PathMapper(reportedBasedir(this.target.agent.info), systemOf(this.target.agent.info));
    }
    const args = this.paths.mapArgs(name, rawArgs as Record<string, unknown>);
    // buildbot-worker's msgpack side fills these in with None: Buildbot's writer and reader are reached by command_id
    delete args.writer;
    delete args.reader;
    const builder = typeof msg.builder_name === 'string' ? msg.builder_name : null;
    return { key, wireId: msg.command_id, name, args, builder };
  }
}

/** set_worker_settings' args, checked as buildbot_worker/msgpack.py checks them; values out of range get the defaults. */
function settingsOf(args: unknown): WorkerSettings {
  if (!args || typeof args !== 'object') throw new Error('message did not contain obligatory "args" key');
  const a = args as Record<string, unknown>;
  for (const k of ['buffer_size', 'buffer_timeout', 'newline_re', 'max_line_length']) {
    if (!(k in a)) throw new Error('message did not contain obligatory settings for worker');
  }
  const mll = Number(a.max_line_length);
  const bs = Number(a.buffer_size);
  return {
    newlineRe: pythonNewlineRe(a.newline_re),
    maxLineLength: Number.isInteger(mll) && mll >= 3 ? mll : DEFAULT_MAX_LINE_LENGTH,
    bufferSize: Number.isInteger(bs) && bs >= 1024 ? Math.min(bs, MAX_BUFFER_SIZE) : DEFAULT_BUFFER_SIZE,
    // buffer_timeout (5 s from Buildbot) is not used: see the update timer in buildbot-output.ts
  };
}
